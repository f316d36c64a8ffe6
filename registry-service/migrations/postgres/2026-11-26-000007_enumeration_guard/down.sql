DROP TABLE security_events;
DROP TABLE lookup_throttles;
DROP INDEX access_events_organisation_time;
DROP INDEX access_events_accessor_time;
