-- The relay's ledger: how far it has published the event store's feed, and
-- the events it could not publish. It lives in a file of its own
-- (relay.db), so the relay's writes never wait for the event writer's lock.
--
-- Unlike the read models this database is not a cache: it cannot be rebuilt
-- from the event store. The checkpoint decides which events are published
-- again after a crash, and a dead letter is the only record that an event
-- was never published.

-- The feed position through which every event is published or
-- dead-lettered. One row; it only ever moves forwards (see Advance).
CREATE TABLE relay_checkpoint (
    id       INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    position INTEGER NOT NULL CHECK (position >= 0)
) STRICT;

-- One row per event that was not published: failed (publishing it failed
-- permanently) or parked (held back behind an earlier failed event of the
-- same aggregate, so that consumers never see an aggregate's events out of
-- order).
--
-- position is the event's feed position and the dead letter's id; it is a
-- plain rowid alias, not AUTOINCREMENT, because the relay assigns it from
-- the feed. Ids are canonical lower-case UUID text and times UTC RFC 3339
-- text with nine fraction digits, as in the other databases: they round-trip
-- exactly, sort as text and read well in the sqlite3 CLI during an incident.
--
-- UNIQUE (aggregate_id, sequence) says that one event has one position: a
-- second letter for the same event under another position is a bug, and
-- the transaction that tries it fails as a whole. Its index also serves
-- OfAggregate and Blocked.
CREATE TABLE dead_letters (
    position        INTEGER NOT NULL PRIMARY KEY CHECK (position > 0),
    event_id        TEXT    NOT NULL,
    aggregate_id    TEXT    NOT NULL,
    aggregate_type  TEXT    NOT NULL,
    sequence        INTEGER NOT NULL CHECK (sequence > 0),
    event_type      TEXT    NOT NULL,
    topic           TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('failed', 'parked')),
    error           TEXT    NOT NULL DEFAULT '',
    attempts        INTEGER NOT NULL CHECK (attempts >= 0),
    first_failed_at TEXT    NOT NULL,
    last_failed_at  TEXT    NOT NULL,
    UNIQUE (aggregate_id, sequence)
) STRICT;
