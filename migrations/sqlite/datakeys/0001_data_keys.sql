-- The data keys of crypto-shredding (internal/sqlite/datakeys.go), in
-- datakeys.db of their own: the file runs with secure_delete, so that the
-- bytes of an erased key are overwritten with zeros rather than left in a
-- free page, and an erasure truncates its WAL. One row per subject (a
-- customer id; the nil uuid for the deployment's claim-hash secret).
-- wrapped is the data key encrypted by the key-encryption key kek, never
-- the key itself. An erased key keeps its row as a tombstone, with kek and
-- wrapped NULL and erased_at set, so that it is never created again. Times
-- are timeFormat text.
CREATE TABLE data_keys (
    subject    TEXT NOT NULL PRIMARY KEY,
    kek        TEXT,
    wrapped    BLOB,
    created_at TEXT NOT NULL,
    erased_at  TEXT
) STRICT, WITHOUT ROWID;
