package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"runtime"
	"time"

	"github.com/orderd/orderd/migrations"
)

// timeFormat is how orderd's SQLite databases store times: UTC RFC 3339
// text with nine fraction digits, which round-trips exactly, sorts as text
// and reads well in the sqlite3 CLI during an incident.
const timeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// formatTime formats t in timeFormat.
func formatTime(t time.Time) string { return t.UTC().Format(timeFormat) }

// parseTime parses a time stored in timeFormat (any RFC 3339 time, in
// fact), in UTC.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad time %q: %w", s, err)
	}
	return t.UTC(), nil
}

// dbOptions tune openDB.
type dbOptions struct {
	// Synchronous is the writer's synchronous pragma, FULL or NORMAL; each
	// database says in its file's comments why it chose its level.
	Synchronous string
	// BusyTimeout is how long a connection waits for a lock held by another
	// connection (a checkpoint, the sqlite3 CLI) before failing [5s].
	BusyTimeout time.Duration
	// SecureDelete has the writer overwrite deleted content with zeros
	// (PRAGMA secure_delete), so that it lingers in no free page: the data
	// keys' file sets it.
	SecureDelete bool
}

// openDB opens the SQLite file at path the way every orderd database is
// used (the event store's, the keys', the snapshots', the read models', the
// relay's ledger): one writer connection in WAL mode, whose transactions
// begin IMMEDIATE, with the schema of dir (for example "sqlite/events") applied,
// and a pool of query-only readers that WAL never makes wait for the
// writer. On error nothing is left open.
func openDB(ctx context.Context, path, dir string, opts dbOptions) (w, r *sql.DB, err error) {
	if opts.BusyTimeout <= 0 {
		opts.BusyTimeout = 5 * time.Second
	}
	if opts.Synchronous == "" {
		opts.Synchronous = "FULL"
	}
	defer func() {
		if err != nil {
			for _, db := range []*sql.DB{w, r} {
				if db != nil {
					_ = db.Close()
				}
			}
			w, r = nil, nil
		}
	}()
	// The writer sets WAL first: journal_mode is persistent in the file, so
	// the readers opened afterwards find it. BEGIN IMMEDIATE takes the write
	// lock at BEGIN, where busy_timeout can wait for it; a deferred
	// transaction that upgrades later can fail at once with SQLITE_BUSY.
	pragmas := []string{"journal_mode(WAL)", "synchronous(" + opts.Synchronous + ")"}
	if opts.SecureDelete {
		pragmas = append(pragmas, "secure_delete(on)")
	}
	if w, err = sql.Open("sqlite", dsn(path, opts.BusyTimeout, pragmas...)+"&_txlock=immediate"); err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", path, err)
	}
	// One connection: SQLite admits one writer anyway.
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	if err := migrations.ApplySQLite(ctx, w, dir); err != nil {
		return w, nil, fmt.Errorf("migrate %s: %w", path, err)
	}
	if r, err = sql.Open("sqlite", dsn(path, opts.BusyTimeout, "query_only(true)")); err != nil {
		return w, nil, fmt.Errorf("open %s for reading: %w", path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	return w, r, nil
}

// dsn builds a modernc.org/sqlite data source name. The file: URI
// form with an escaped path keeps a '?', '#' or '%' in the path from being
// read as the start of the parameters.
func dsn(path string, busy time.Duration, pragmas ...string) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busy.Milliseconds()))
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}
