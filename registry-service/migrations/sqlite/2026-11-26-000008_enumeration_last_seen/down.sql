DROP TRIGGER access_events_note_last_seen;
DROP TABLE enumeration_last_seen;
CREATE INDEX access_events_accessor_time ON access_events (accessor_key, access_time, nhs_number);
CREATE INDEX access_events_organisation_time ON access_events (organisation_ods_code, access_time, nhs_number);
