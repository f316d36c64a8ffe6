-- A claim on a batch id while its upload runs: one upload at a time per (council, batch id), so
-- a concurrent upload of the same id is refused before it applies anything. The holder renews
-- it as it goes; a claim whose holder died lapses at claimed_until. Expand-only: new tables.
CREATE TABLE upload_claims (
    local_authority TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    -- Random per upload: only the holder renews or releases its claim.
    holder BIGINT NOT NULL,
    claimed_until BIGINT NOT NULL,
    PRIMARY KEY (local_authority, batch_id)
);

-- Every rejection of a batch, written as the batch streams: the answer carries only the first
-- ones, ListBatchRejections pages through all of them.
CREATE TABLE batch_rejections (
    local_authority TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    -- The encoded cpis.registry.v1.RecordRejection.
    rejection BLOB NOT NULL,
    PRIMARY KEY (local_authority, batch_id, position)
);
