-- CP-IS registry, initial schema (SQLite). Column types are kept portable with the SQLite
-- migration of the same version: calendar dates as INTEGER days since 1970-01-01, instants as
-- BIGINT microseconds since the Unix epoch, enums as SMALLINT-compatible INTEGER.

CREATE TABLE local_authorities (
    ods_code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    emergency_duty_phone TEXT NOT NULL,
    office_hours_phone TEXT,
    update_time BIGINT NOT NULL
);

CREATE TABLE child_records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    local_authority TEXT NOT NULL REFERENCES local_authorities (ods_code),
    nhs_number TEXT NOT NULL,
    local_case_id TEXT,
    given_name TEXT NOT NULL,
    family_name TEXT NOT NULL,
    date_of_birth INTEGER NOT NULL,
    cpp_start INTEGER,
    cpp_end INTEGER,
    cpp_delete INTEGER,
    lac_start INTEGER,
    lac_end INTEGER,
    lac_delete INTEGER,
    lac_legal_basis INTEGER,
    ucpp_start INTEGER,
    ucpp_end INTEGER,
    ucpp_delete INTEGER,
    ucpp_expected_delivery INTEGER,
    version BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    -- One record per (council, NHS number); also the council's listing order.
    CONSTRAINT child_records_council_nhs UNIQUE (local_authority, nhs_number)
);
-- Health looks records up by NHS number across councils.
CREATE INDEX child_records_nhs_number ON child_records (nhs_number);

CREATE TABLE upload_batches (
    local_authority TEXT NOT NULL REFERENCES local_authorities (ods_code),
    batch_id TEXT NOT NULL,
    -- SHA-256 of the batch's records as received: a retry with other content is refused.
    content_digest BLOB NOT NULL,
    -- The encoded cpis.registry.v1.BatchResult returned to the first upload.
    result BLOB NOT NULL,
    complete_time BIGINT NOT NULL,
    PRIMARY KEY (local_authority, batch_id)
);
