-- The claims of e-mail addresses (internal/sqlite/emailclaims.go), one row
-- per claim: claim is the address's key (a keyed hash of the address, never
-- the address), attempt names the row, customer claimed at its version
-- since, at a time. Written by the event writer in its group commit, and
-- copied by a backup with the events they guard. Times are timeFormat
-- text.
CREATE TABLE email_claims (
    claim    TEXT NOT NULL,
    attempt  TEXT NOT NULL,
    customer TEXT NOT NULL,
    since    INTEGER NOT NULL,
    at       TEXT NOT NULL,
    PRIMARY KEY (claim, attempt)
) STRICT, WITHOUT ROWID;
