-- enumeration_last_seen from the accesses its longest window (a day) can still count, with an
-- hour's margin for a clock that ran behind (access_time is the registry's clock, in
-- microseconds since the epoch). A row the trigger wrote already is never moved back.
INSERT INTO enumeration_last_seen (subject, nhs_number, last_seen)
SELECT CASE subject.k WHEN 0 THEN recent.accessor_key
                      ELSE 'organisation:' || recent.organisation_ods_code END,
       recent.nhs_number, max(recent.access_time)
FROM (
    SELECT accessor_key, organisation_ods_code, nhs_number, access_time
    FROM access_events
    WHERE access_time > CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)
                        - 25 * 3600000000
) AS recent
CROSS JOIN (SELECT 0 AS k UNION ALL SELECT 1) AS subject
WHERE true
GROUP BY 1, 2
ON CONFLICT (subject, nhs_number) DO UPDATE SET last_seen = excluded.last_seen
    WHERE excluded.last_seen > enumeration_last_seen.last_seen;
