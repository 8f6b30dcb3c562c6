-- The partition count of each topic the relay publishes to, recorded when
-- the relay first saw the topic (it created it, or found it). Kafka keeps a
-- key's records in order only on one partition, and the partition of a key
-- is its hash modulo the count: once the count changes, an aggregate's next
-- events land on another partition than its earlier ones, and consumers may
-- read them out of order. The relay refuses a topic whose live count differs
-- from this one, until an operator records the new count on purpose
-- (ORDERD_KAFKA_ACCEPT_PARTITIONS, see docs/operations.md).
CREATE TABLE relay_topic_partitions (
    topic      TEXT    NOT NULL PRIMARY KEY,
    partitions INTEGER NOT NULL CHECK (partitions > 0)
) STRICT;
