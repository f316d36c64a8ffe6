-- Access events and the council notification outbox (expand-only: new tables and a new column
-- with a default, so a previous binary keeps working beside this one).

-- Each council's last issued notification sequence; incremented under the row's lock, so
-- sequences are strictly increasing in commit order with no visible gaps.
ALTER TABLE local_authorities ADD COLUMN last_notification_sequence BIGINT NOT NULL DEFAULT 0;
-- Each council's acknowledged cursor.
ALTER TABLE local_authorities ADD COLUMN acknowledged_sequence BIGINT NOT NULL DEFAULT 0;

CREATE TABLE access_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    access_id TEXT NOT NULL UNIQUE,
    nhs_number TEXT NOT NULL,
    access_time BIGINT NOT NULL,
    -- 1 unscheduled, 2 scheduled silent read (cpis.common.v1.AccessMode).
    access_mode INTEGER NOT NULL,
    -- Who, for collapsing repeat views: "person:<user id>" or "system:<system id>".
    accessor_key TEXT NOT NULL,
    organisation_ods_code TEXT NOT NULL,
    care_setting INTEGER NOT NULL,
    -- The encoded cpis.common.v1.AccessEvent (accessor details as the council sees them).
    event BLOB NOT NULL
);
CREATE INDEX access_events_nhs_time ON access_events (nhs_number, access_time DESC);

CREATE TABLE notifications (
    local_authority TEXT NOT NULL REFERENCES local_authorities (ods_code),
    sequence BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    -- The encoded cpis.registry.v1.Notification.
    notification BLOB NOT NULL,
    PRIMARY KEY (local_authority, sequence)
);
