DROP TRIGGER access_events_note_last_seen;
DROP TABLE enumeration_last_seen;
