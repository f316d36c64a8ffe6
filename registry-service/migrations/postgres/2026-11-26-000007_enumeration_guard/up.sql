-- The enumeration guard (issue 13): distinct NHS numbers looked up per accessor and per
-- organisation in sliding windows are counted over access_events, which every replica writes;
-- these indexes make each count a bounded range scan that never touches the table (the NHS
-- number is the last key column). Expand-only: new indexes and tables, so a previous binary
-- keeps working beside this one.
CREATE INDEX access_events_accessor_time ON access_events (accessor_key, access_time, nhs_number);
CREATE INDEX access_events_organisation_time ON access_events (organisation_ods_code, access_time, nhs_number);

-- A caller that crossed a threshold, refused until throttled_until. Written only when a
-- threshold is crossed (never on an ordinary lookup); the row is claimed by an UPDATE or an
-- INSERT that only one of several racing replicas can win, so one crossing is one event.
CREATE TABLE lookup_throttles (
    -- "person:<user id>", "system:<system id>:<responsible user id>" (as access_events'
    -- accessor_key) or "organisation:<ODS code>".
    subject TEXT PRIMARY KEY,
    throttled_until BIGINT NOT NULL
);

-- Security events an operator lists (OperatorService.ListSecurityEvents), newest first. No
-- child data: who, where, which threshold and window.
CREATE TABLE security_events (
    id BIGSERIAL PRIMARY KEY,
    event_time BIGINT NOT NULL,
    -- The encoded cpis.registry.v1.SecurityEvent.
    event BYTEA NOT NULL
);
