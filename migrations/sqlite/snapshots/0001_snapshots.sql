-- Aggregate snapshots (internal/store/sqlite/snapshots.go), in snapshots.db
-- of their own so that their writes never hold the event store's write
-- lock. They are a cache: deleting this file changes no answer, only the
-- time the next loads take. One row per aggregate and version; state is the
-- domain's encoding, opaque here. Times are TimeFormat text.
CREATE TABLE snapshots (
    aggregate_id   TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    aggregate_type TEXT    NOT NULL,
    state_version  INTEGER NOT NULL,
    state          BLOB    NOT NULL,
    taken_at       TEXT    NOT NULL,
    PRIMARY KEY (aggregate_id, version)
) STRICT, WITHOUT ROWID;
