-- The journal of idempotency keys claimed by the commands that appended
-- (internal/sqlite/journal.go): the event writer inserts a key's record
-- here in the transaction of the command's events, so that the record is
-- durable exactly when they are, under their one fsync, while keys.db
-- (which holds the key's record itself, written without an fsync of its
-- own) may lose its latest writes in a crash of the machine. A row is
-- copied into keys.db by the next open, and deleted once keys.db holds its
-- record durably (after an fsync of keys.db that began after the row was
-- written), so the table keeps a few seconds of keyed commands. Append
-- only: a key's later row wins. Times are TimeFormat text.
CREATE TABLE idempotency_journal (
    seq          INTEGER PRIMARY KEY,
    key          TEXT    NOT NULL,
    record_id    TEXT    NOT NULL,
    fingerprint  BLOB    NOT NULL,
    owner        TEXT    NOT NULL,
    aggregate_id TEXT,
    created_at   TEXT    NOT NULL,
    expires_at   TEXT    NOT NULL,
    instance     TEXT    NOT NULL,
    boot         TEXT    NOT NULL
) STRICT;
