-- How far each consumer of the change feed (the relay, the projector) has
-- handled it: the position through which every event was handed to the
-- consumer and acknowledged. Saved by the writer, at most a few times a
-- second and when the consumer stops; after a crash the consumer is handed
-- again what came after the saved position, which it handles idempotently.
-- It only moves forward.
CREATE TABLE feed_progress (
    consumer TEXT    NOT NULL PRIMARY KEY,
    position INTEGER NOT NULL CHECK (position >= 0)
) STRICT;
