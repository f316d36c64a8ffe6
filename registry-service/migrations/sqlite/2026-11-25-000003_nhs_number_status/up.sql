-- NHS numbers the demographics service reports inactive (adopted, superseded or merged,
-- deceased). Expand-only: a new table.
CREATE TABLE nhs_number_status (
    nhs_number TEXT PRIMARY KEY,
    -- cpis.common.v1.InactiveReason.
    reason INTEGER NOT NULL,
    replacement_nhs_number TEXT,
    -- Days since 1970-01-01.
    effective_date INTEGER,
    update_time BIGINT NOT NULL
);
