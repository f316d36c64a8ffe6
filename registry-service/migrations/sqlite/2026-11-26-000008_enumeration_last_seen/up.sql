-- The enumeration guard counts distinct NHS numbers per subject in a sliding window. Counted over
-- access_events, each count read every access in the window: its cost grew with how often a
-- caller looked children up, not with how many children, so one clinician re-opening the same
-- child all day (within the rate limits) made every lookup of their organisation dearer. This
-- table keeps one row per (subject, number) with the latest access: a count reads at most as
-- many rows as distinct children in the window, and a threshold bounds those.
--
-- A trigger on access_events keeps it, so every path that records an access keeps it true.
-- access_events' two guard indexes go: nothing reads them now, and on SQLite one registry
-- process owns the file, so no previous binary runs beside this one (PostgreSQL keeps them for
-- a rolling upgrade; going back to a previous binary here runs down.sql, which makes them
-- again). Each recorded access now writes the trigger's two rows and their window index
-- entries instead of those two indexes' entries. The next migration fills the table.
CREATE TABLE enumeration_last_seen (
    -- An access_events accessor_key ("person:…", "system:…") or "organisation:<ODS code>",
    -- as lookup_throttles' subject.
    subject TEXT NOT NULL,
    nhs_number TEXT NOT NULL,
    -- The subject's latest access of the number (microseconds since the epoch).
    last_seen BIGINT NOT NULL,
    PRIMARY KEY (subject, nhs_number)
) WITHOUT ROWID;
-- A window's count is a range scan of this index alone (the number is its last column).
CREATE INDEX enumeration_last_seen_window ON enumeration_last_seen (subject, last_seen, nhs_number);

-- Each recorded access moves its accessor's and its organisation's row forward, never back.
CREATE TRIGGER access_events_note_last_seen AFTER INSERT ON access_events
BEGIN
    INSERT INTO enumeration_last_seen (subject, nhs_number, last_seen)
    VALUES (NEW.accessor_key, NEW.nhs_number, NEW.access_time),
           ('organisation:' || NEW.organisation_ods_code, NEW.nhs_number, NEW.access_time)
    ON CONFLICT (subject, nhs_number) DO UPDATE SET last_seen = excluded.last_seen
        WHERE excluded.last_seen > enumeration_last_seen.last_seen;
END;

DROP INDEX access_events_accessor_time;
DROP INDEX access_events_organisation_time;
