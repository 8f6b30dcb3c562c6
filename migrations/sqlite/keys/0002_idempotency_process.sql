-- The process of the attempt that owns a record (store.Process): its
-- instance name and its boot id. Rows of before have neither; they are
-- settled as before, once they look dead.
ALTER TABLE idempotency_keys ADD COLUMN instance TEXT NOT NULL DEFAULT '';
ALTER TABLE idempotency_keys ADD COLUMN boot TEXT NOT NULL DEFAULT '';
