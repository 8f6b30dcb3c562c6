-- The relay consumes a push-shaped feed that keeps the consumer's progress
-- itself and never skips an event, so the relay's own checkpoint and its
-- handled sequences (0002) go.
DROP TABLE relay_checkpoint;
DROP TABLE handled;

-- Operators' requests on dead letters (replay, discard), queued here so
-- that the active relay carries them out, whichever instance took the
-- command, and their outcomes, which the instance that took it waits for.
-- One row per dead letter: the latest request on it. The row is not
-- deleted with the letter, since a replay that publishes the letter
-- removes it, and the waiter still has to read the outcome; finished rows
-- are pruned after a week (see Finish).
--
-- Times are UTC RFC 3339 text with nine fraction digits, as in
-- dead_letters; finished_at is '' while the request is pending.
CREATE TABLE relay_requests (
    position     INTEGER NOT NULL PRIMARY KEY CHECK (position > 0),
    id           TEXT    NOT NULL,
    op           TEXT    NOT NULL CHECK (op IN ('replay', 'discard')),
    requested_at TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('pending', 'done', 'failed', 'missing')),
    published    INTEGER NOT NULL DEFAULT 0 CHECK (published >= 0),
    error        TEXT    NOT NULL DEFAULT '',
    finished_at  TEXT    NOT NULL DEFAULT ''
) STRICT;

-- The active relay looks for pending requests every second.
CREATE INDEX relay_requests_pending ON relay_requests (position) WHERE state = 'pending';
