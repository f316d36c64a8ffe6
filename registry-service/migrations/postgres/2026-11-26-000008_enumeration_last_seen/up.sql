-- The enumeration guard counts distinct NHS numbers per subject in a sliding window. Counted over
-- access_events, each count read every access in the window: its cost grew with how often a
-- caller looked children up, not with how many children, so one clinician re-opening the same
-- child all day (within the rate limits) made every lookup of their organisation dearer. This
-- table keeps one row per (subject, number) with the latest access: a count reads at most as
-- many rows as distinct children in the window, and a threshold bounds those.
--
-- A trigger on access_events keeps it, so every path that records an access (and a previous
-- binary beside this one in a rolling upgrade) keeps it true. Expand-only: a new table, function
-- and trigger; access_events' guard indexes stay for a previous binary. Creating the trigger
-- locks access_events against inserts until this migration commits, so this one does nothing
-- else; the next fills the table with the last day's accesses without that lock.
CREATE TABLE enumeration_last_seen (
    -- An access_events accessor_key ("person:…", "system:…") or "organisation:<ODS code>",
    -- as lookup_throttles' subject.
    subject TEXT NOT NULL,
    nhs_number TEXT NOT NULL,
    -- The subject's latest access of the number (microseconds since the epoch).
    last_seen BIGINT NOT NULL,
    PRIMARY KEY (subject, nhs_number)
);
-- A window's count is a range scan of this index alone (the number is its last column).
CREATE INDEX enumeration_last_seen_window ON enumeration_last_seen (subject, last_seen, nhs_number);

-- Once a statement, for all its rows: each (subject, number) once with its latest time, in key
-- order (concurrent transactions lock shared rows in the same order), never moved back in time.
CREATE FUNCTION enumeration_note_last_seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO enumeration_last_seen AS s (subject, nhs_number, last_seen)
    SELECT seen.subject, seen.nhs_number, max(seen.access_time)
    FROM (
        SELECT accessor_key AS subject, nhs_number, access_time FROM new_events
        UNION ALL
        SELECT 'organisation:' || organisation_ods_code, nhs_number, access_time FROM new_events
    ) AS seen
    GROUP BY seen.subject, seen.nhs_number
    ORDER BY seen.subject, seen.nhs_number
    ON CONFLICT (subject, nhs_number) DO UPDATE SET last_seen = EXCLUDED.last_seen
        WHERE s.last_seen < EXCLUDED.last_seen;
    RETURN NULL;
END
$$;
CREATE TRIGGER access_events_note_last_seen AFTER INSERT ON access_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION enumeration_note_last_seen();
