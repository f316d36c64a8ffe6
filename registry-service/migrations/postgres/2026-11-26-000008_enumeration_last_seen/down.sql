DROP TRIGGER access_events_note_last_seen ON access_events;
DROP FUNCTION enumeration_note_last_seen();
DROP TABLE enumeration_last_seen;
