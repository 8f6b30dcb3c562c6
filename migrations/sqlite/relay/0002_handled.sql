-- For a feed without positions (ScyllaDB's CDC log): the highest sequence
-- of each aggregate that the relay published or dead-lettered. A change the
-- log hands again is skipped below it, and one the log lost (behind its
-- confidence window, or expired) shows as a gap above it and is loaded from
-- the events table, so that Kafka still sees every event, in order.
CREATE TABLE handled (
    aggregate_id TEXT    NOT NULL PRIMARY KEY,
    sequence     INTEGER NOT NULL CHECK (sequence > 0)
) STRICT;
