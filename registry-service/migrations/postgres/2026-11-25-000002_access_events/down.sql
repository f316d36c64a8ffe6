DROP TABLE notifications;
DROP TABLE access_events;
ALTER TABLE local_authorities DROP COLUMN acknowledged_sequence;
ALTER TABLE local_authorities DROP COLUMN last_notification_sequence;
