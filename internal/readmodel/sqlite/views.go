// Package sqlite keeps orderd's read models in a SQLite database of their
// own, separate from the event store's file, so that projection writes never
// wait for the event writer's lock, nor it for them.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/migrations"
)

// checkpointName is this projector's row in projector_checkpoint. The table
// is keyed by name so that a second projection could share the file.
const checkpointName = "readmodel"

// timeFormat writes UTC times with a fixed nine fraction digits: they
// round-trip exactly and sort as text.
const timeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// Views is the SQLite backend of the read models. It implements the
// readmodel.Writer the projector writes through and the readmodel.Views
// that queries read. It is safe for concurrent use.
type Views struct {
	write *sql.DB // one connection: SQLite has one writer at a time anyway
	read  *sql.DB // a pool of read-only connections; WAL lets them run beside the writer
	log   *zap.Logger
	stmts statements

	// Changes closes Changed when an Apply commits.
	readmodel.Changes
}

// Open opens, creating it if needed, the views database at path and brings
// its schema up to date. It returns an error if the file cannot be opened
// or migrated.
func Open(path string, log *zap.Logger) (*Views, error) {
	// synchronous(NORMAL) in WAL mode does not fsync on every commit, so a
	// power loss can drop the last few commits. That is safe here: the views
	// are a cache rebuilt from the event store, and each commit carries its
	// checkpoint, so whatever is lost is lost together with the checkpoint
	// that covered it and the projector projects those batches again.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	write, read, err := migrations.OpenSQLite(ctx, path, "sqlite/views", migrations.SQLiteOptions{Synchronous: "NORMAL"})
	if err != nil {
		return nil, fmt.Errorf("readmodel/sqlite: %w", err)
	}
	v := &Views{write: write, read: read, log: log}
	if err := v.stmts.prepare(ctx, write); err != nil {
		_ = v.Close()
		return nil, fmt.Errorf("readmodel/sqlite: %s: %w", path, err)
	}
	log.Info("read model views open", zap.String("path", path))
	return v, nil
}

// Close closes the database. Queries and Apply fail after Close.
func (v *Views) Close() error {
	return errors.Join(v.stmts.close(), v.read.Close(), v.write.Close())
}

func formatTime(t time.Time) string { return t.UTC().Format(timeFormat) }

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad time %q: %w", s, err)
	}
	return t.UTC(), nil
}

// Interface checks: the consumers define the interfaces, this backend
// promises to satisfy them.
var (
	_ readmodel.Writer = (*Views)(nil)
	_ readmodel.Views  = (*Views)(nil)
)
