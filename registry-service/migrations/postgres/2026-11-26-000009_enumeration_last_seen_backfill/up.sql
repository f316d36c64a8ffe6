-- enumeration_last_seen from the accesses its longest window (a day) can still count, with an
-- hour's margin for a registry whose clock runs behind the database's (access_time is the
-- registry's clock, in microseconds since the epoch). Apart from 000008, so only reads of
-- access_events are held while it runs: the trigger keeps the rows of accesses recorded
-- meanwhile, and a row it wrote already is never moved back.
INSERT INTO enumeration_last_seen AS s (subject, nhs_number, last_seen)
SELECT subject.key, recent.nhs_number, max(recent.access_time)
FROM (
    SELECT accessor_key, organisation_ods_code, nhs_number, access_time
    FROM access_events
    WHERE access_time > (extract(epoch FROM now()) * 1000000)::bigint - 25 * 3600000000::bigint
) AS recent
CROSS JOIN LATERAL (
    VALUES (recent.accessor_key), ('organisation:' || recent.organisation_ods_code)
) AS subject (key)
GROUP BY subject.key, recent.nhs_number
ORDER BY subject.key, recent.nhs_number
ON CONFLICT (subject, nhs_number) DO UPDATE SET last_seen = EXCLUDED.last_seen
    WHERE s.last_seen < EXCLUDED.last_seen;
