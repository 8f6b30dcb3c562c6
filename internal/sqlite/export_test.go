package sqlite

// DSN is dsn for the external tests, which open a views file by hand.
var DSN = dsn
