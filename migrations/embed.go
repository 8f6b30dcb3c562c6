// Package migrations embeds the schema of every backend and applies it.
//
// go:embed cannot reach parent folders, so the files live here and the
// backends take them from this package.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// SQLite holds one folder per SQLite database: sqlite/events for the event
// store, sqlite/views for the read models. Files are named NNNN_what.sql and
// applied in order.
//
//go:embed sqlite
var SQLite embed.FS

// Scylla holds the CQL schema of the ScyllaDB event store, scylla/NNNN_what.cql,
// applied in order by gocqlx/migrate (internal/cql). A line
// "-- CALL name;" in a file runs the Go callback registered under name.
//
//go:embed scylla
var Scylla embed.FS

// ApplySQLite applies, in one transaction each, the files of dir (for
// example "sqlite/events") that db has not recorded in its
// schema_migrations table yet.
func ApplySQLite(ctx context.Context, db *sql.DB, dir string) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY,
		name    TEXT NOT NULL
	)`); err != nil {
		return fmt.Errorf("migrations: create schema_migrations: %w", err)
	}
	entries, err := fs.ReadDir(SQLite, dir)
	if err != nil {
		return fmt.Errorf("migrations: read %s: %w", dir, err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	seen := map[int]string{}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, _, _ := strings.Cut(name, "_")
		version, err := strconv.Atoi(num)
		if err != nil {
			return fmt.Errorf("migrations: %s/%s: name must start with a number", dir, name)
		}
		if other, dup := seen[version]; dup {
			// The second would be taken as applied already and skipped.
			return fmt.Errorf("migrations: %s/%s and %s have the same number", dir, name, other)
		}
		seen[version] = name
		if err := applyOne(ctx, db, dir, name, version); err != nil {
			return err
		}
	}
	return nil
}

func applyOne(ctx context.Context, db *sql.DB, dir, name string, version int) (err error) {
	body, err := fs.ReadFile(SQLite, path.Join(dir, name))
	if err != nil {
		return fmt.Errorf("migrations: read %s/%s: %w", dir, name, err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrations: begin %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	var done int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, version).Scan(&done); err != nil {
		return fmt.Errorf("migrations: check %s: %w", name, err)
	}
	if done > 0 {
		return tx.Rollback()
	}
	if _, err := tx.ExecContext(ctx, string(body)); err != nil {
		return fmt.Errorf("migrations: apply %s/%s: %w", dir, name, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name) VALUES (?, ?)`, version, name); err != nil {
		return fmt.Errorf("migrations: record %s: %w", name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrations: commit %s: %w", name, err)
	}
	return nil
}
