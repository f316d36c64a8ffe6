-- Keys the registry generates for itself and every replica shares (the page-token key that
-- makes page tokens opaque). Expand-only: a new table.
CREATE TABLE registry_keys (
    name TEXT PRIMARY KEY,
    key_material BYTEA NOT NULL,
    create_time BIGINT NOT NULL
);
