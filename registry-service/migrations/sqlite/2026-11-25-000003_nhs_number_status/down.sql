DROP TABLE nhs_number_status;
