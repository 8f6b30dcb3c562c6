-- The read models' catalog (readmodels.db): which generation of the views
-- queries read, and the rebuilds that make generations. Generation 0 is
-- views.db; generation n > 0 is views.<n>.db beside it.
CREATE TABLE generation (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    current INTEGER NOT NULL
);
INSERT INTO generation (id, current) VALUES (1, 0);

-- One row per rebuild ever begun. At most one has a state that is not
-- final (done, failed, cancelled): Begin inserts only when none has.
-- Times are RFC 3339 with nanoseconds in UTC, '' when not set.
CREATE TABLE rebuilds (
    id               TEXT PRIMARY KEY,
    state            TEXT NOT NULL,
    generation       INTEGER NOT NULL,
    from_generation  INTEGER NOT NULL,
    events_done      INTEGER NOT NULL,
    events_total     INTEGER NOT NULL,
    error            TEXT NOT NULL,
    runner           TEXT NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    requested_at     TEXT NOT NULL,
    started_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    ended_at         TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX rebuilds_by_request ON rebuilds (requested_at);
