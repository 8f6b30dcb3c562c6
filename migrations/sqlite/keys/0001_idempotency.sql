-- Idempotency keys (internal/store/sqlite/idempotency.go), in keys.db of
-- their own so that their writes never hold the event store's write lock.
-- A record is a claim and a cache: the events of a command carry the
-- record's id in their metadata, which is what settles a record left
-- pending by a crash. Times are TimeFormat text; expired rows are ignored
-- by every read and deleted by a periodic purge.
CREATE TABLE idempotency_keys (
    key          TEXT    NOT NULL PRIMARY KEY,
    record_id    TEXT    NOT NULL,
    fingerprint  BLOB    NOT NULL,
    owner        TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('pending', 'done', 'abandoned')),
    aggregate_id TEXT,
    status       INTEGER,
    header       TEXT,   -- JSON object of the stored response's headers
    body         BLOB,
    created_at   TEXT    NOT NULL,
    updated_at   TEXT    NOT NULL,
    expires_at   TEXT    NOT NULL
) STRICT;

CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
