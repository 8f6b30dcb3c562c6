-- The event log. One row per event; the table is append-only.
--
-- position is the global commit order that the change feed follows.
-- AUTOINCREMENT (rather than a plain rowid alias) makes SQLite keep the
-- highest position ever committed in sqlite_sequence, so a position is never
-- handed out twice, even after the newest rows were deleted by hand: a feed
-- checkpoint always means the same event.
--
-- UUIDs are stored as canonical lower-case text (36 bytes) rather than
-- 16-byte blobs. The log is the system of record and is read with the
-- sqlite3 CLI during incidents; text ids can be pasted into a WHERE clause
-- and compared with logs as they are. The cost is about 60 bytes per row and
-- slightly larger indexes, which is small next to the JSON payload.
--
-- timestamp is Unix time in nanoseconds (UTC), an INTEGER: it round-trips a
-- Go time.Time exactly, sorts correctly and covers the years 1678 to 2262.
--
-- metadata is a JSON object of strings, or NULL when there is none.
--
-- UNIQUE (aggregate_id, sequence) is the backstop of optimistic concurrency:
-- the store checks max(sequence) before inserting, and the constraint makes
-- a second event at the same version impossible whatever the code does. Its
-- index also serves Load and the max(sequence) check.
CREATE TABLE events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT    NOT NULL UNIQUE,
    aggregate_id   TEXT    NOT NULL,
    aggregate_type TEXT    NOT NULL,
    sequence       INTEGER NOT NULL CHECK (sequence > 0),
    event_type     TEXT    NOT NULL,
    event_version  INTEGER NOT NULL CHECK (event_version > 0),
    data           TEXT    NOT NULL,
    causation_id   TEXT    NOT NULL,
    correlation_id TEXT    NOT NULL,
    timestamp      INTEGER NOT NULL,
    metadata       TEXT,
    UNIQUE (aggregate_id, sequence)
) STRICT;
