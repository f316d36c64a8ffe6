DROP TABLE upload_batches;
DROP TABLE child_records;
DROP TABLE local_authorities;
