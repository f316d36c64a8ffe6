-- Holding periods: when each council held a record for each NHS number. A council's view of a
-- child's access history is the accesses made inside its own periods, never those from before
-- it held a record (else any council could create a record on another council's child and read
-- who had seen the child), and still those made while it held one after it deleted the record.
-- Expand-only: a new table, which the registry writes beside `child_records` (a create opens a
-- period, a removal closes it). A previous binary running beside this one during a rollout
-- does not: a record it creates has no period (its council's history answers RECORD_NOT_FOUND,
-- failing closed, until the record is re-created), and one it deletes leaves its period open.
CREATE TABLE holding_periods (
    id BIGSERIAL PRIMARY KEY,
    local_authority TEXT NOT NULL REFERENCES local_authorities (ods_code),
    nhs_number TEXT NOT NULL,
    -- Microseconds since the Unix epoch: the record's creation.
    start_time BIGINT NOT NULL,
    -- The record's removal; NULL while the council holds it.
    end_time BIGINT
);
-- Access history filters by (NHS number, council); so does "has this council ever held it".
CREATE INDEX holding_periods_nhs_council ON holding_periods (nhs_number, local_authority);

-- Each record held today has been held since its creation (records deleted before this
-- migration left no trace, so their councils' earlier periods cannot be rebuilt).
INSERT INTO holding_periods (local_authority, nhs_number, start_time)
SELECT local_authority, nhs_number, create_time FROM child_records;
