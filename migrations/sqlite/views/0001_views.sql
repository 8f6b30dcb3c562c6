-- Read models kept by the projector. This database is a cache of the event
-- store: it can be deleted and rebuilt by projecting the feed from position 0.
--
-- Ids are canonical lowercase UUID text, so ORDER BY on them is UUID order.
-- Times are UTC RFC 3339 text with nine fraction digits, so they round-trip
-- exactly and sort as text.

CREATE TABLE order_read_model (
    id               TEXT    NOT NULL PRIMARY KEY,
    customer_id      TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    items            TEXT    NOT NULL, -- JSON array of {product_id, quantity}
    tracking_number  TEXT    NOT NULL DEFAULT '',
    carrier          TEXT    NOT NULL DEFAULT '',
    cancelled_reason TEXT    NOT NULL DEFAULT '',
    version          INTEGER NOT NULL, -- sequence of the last applied event
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL
) WITHOUT ROWID;

-- One row per order of a customer, for GET /customers/{id}/orders, paged by
-- order id.
CREATE TABLE orders_by_customer (
    customer_id TEXT    NOT NULL,
    order_id    TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    item_count  INTEGER NOT NULL, -- number of lines
    quantity    INTEGER NOT NULL, -- total units
    version     INTEGER NOT NULL,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (customer_id, order_id)
) WITHOUT ROWID;

CREATE TABLE customers (
    id            TEXT    NOT NULL PRIMARY KEY,
    email         TEXT    NOT NULL,
    first_name    TEXT    NOT NULL,
    last_name     TEXT    NOT NULL,
    phone         TEXT    NOT NULL DEFAULT '',
    version       INTEGER NOT NULL,
    registered_at TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL
) WITHOUT ROWID;

-- The feed position through which the rows above are up to date. It is
-- written in the same transaction as the rows, so the two never disagree.
CREATE TABLE projector_checkpoint (
    name     TEXT    NOT NULL PRIMARY KEY,
    position INTEGER NOT NULL
);
