package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"time"
)

const backupUsage = `usage: orderd backup -to DIR

Asks a running orderd on the embedded store (SQLite), through its admin API,
to copy its data into DIR, a directory on the server's host that is missing
or empty: the event log, the idempotency keys, the snapshots and the relay's
ledger, all at one consistent point (writes wait for a moment while it is
taken), and a manifest of the files' sizes and checksums. The read models
are not copied: the restored orderd projects them again. Restore with
orderd restore -from DIR. The copy runs within the request: on a terminal
the time it has taken is shown meanwhile; the command exits 0 once the
manifest is written. On ScyllaDB or Cassandra the server refuses: back a
cluster up with per-node snapshots (docs/operations.md). Flags:
`

// backupJSON is a backup's manifest as the admin API answers it.
type backupJSON struct {
	TakenAt  time.Time `json:"taken_at"`
	Head     int64     `json:"head"`
	PausedNs int64     `json:"paused_ns"`
	Files    []struct {
		Name string `json:"name"`
		Size int64  `json:"size"`
	} `json:"files"`
}

// Backup is `orderd backup -to DIR`, a client of the admin API at -addr
// (ORDERD_ADMIN_URL) with the token -token (ORDERD_ADMIN_TOKEN). A
// relative DIR is made absolute here, which is right when the server runs
// on this host and the same file system. terminal says whether stdout is
// one: then the elapsed time is redrawn in place while the copy runs.
func Backup(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, terminal bool) (err error) {
	defer func() { report(stderr, "backup", err) }()
	fs, client := adminFlags("backup", backupUsage, getenv, stderr)
	to := fs.String("to", "", "the target `directory`, on the server's host, missing or empty")
	words, err := fs.parse(args)
	if err != nil || words == nil {
		return err
	}
	if len(words) > 0 {
		return &usageError{fmt.Errorf("backup takes no argument, got %q", words)}
	}
	if *to == "" {
		return &usageError{errors.New("-to DIR is required")}
	}
	dir, err := filepath.Abs(*to)
	if err != nil {
		return err
	}
	c := client()
	c.http.Timeout = 0 // a large log takes longer than a minute to copy
	start := time.Now()
	done := make(chan struct{})
	if terminal {
		go func() {
			t := time.NewTicker(250 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					fmt.Fprintf(stdout, "\rbacking up into %s … %s", dir, time.Since(start).Truncate(100*time.Millisecond))
				}
			}
		}()
	}
	var m backupJSON
	err = c.send(ctx, http.MethodPost, "/v1/admin/backups", map[string]string{"to": dir}, &m)
	close(done)
	if terminal {
		fmt.Fprint(stdout, "\r\033[K")
	}
	if err != nil {
		return err
	}
	var size int64
	for _, f := range m.Files {
		size += f.Size
	}
	fmt.Fprintf(stdout, "backup of events through position %d written to %s: %d files, %d bytes, in %s (writes waited %s)\n",
		m.Head, dir, len(m.Files), size, time.Since(start).Truncate(time.Millisecond), time.Duration(m.PausedNs).Truncate(time.Microsecond))
	return nil
}
