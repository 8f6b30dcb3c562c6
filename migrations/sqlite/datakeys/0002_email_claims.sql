-- The claims of e-mail addresses (internal/sqlite/emailclaims.go), one row
-- per claim: claim is the address's key (a keyed hash of the address, never
-- the address), attempt names the row, customer claimed at its version
-- since, at a time. In datakeys.db beside the claim-hash secret, and for
-- the backup's sake: the file is copied after events.db, inside the hold,
-- and a claim is written before the customer event that takes its address,
-- so a backup never holds a customer's address without its claim. Times
-- are timeFormat text.
CREATE TABLE email_claims (
    claim    TEXT NOT NULL,
    attempt  TEXT NOT NULL,
    customer TEXT NOT NULL,
    since    INTEGER NOT NULL,
    at       TEXT NOT NULL,
    PRIMARY KEY (claim, attempt)
) STRICT, WITHOUT ROWID;
