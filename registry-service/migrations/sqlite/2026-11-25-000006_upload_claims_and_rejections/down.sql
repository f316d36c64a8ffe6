DROP TABLE batch_rejections;
DROP TABLE upload_claims;
