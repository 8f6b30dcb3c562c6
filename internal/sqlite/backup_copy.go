package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"

	sqlite "modernc.org/sqlite"
)

// fileCopy copies one database file from a read transaction of its own,
// on a connection of its own, with SQLite's online backup API: begin fixes
// what the copy holds, copyTo writes it.
type fileCopy struct {
	name string
	db   *sql.DB
	conn *sql.Conn
	open bool // a transaction is open
}

// openCopy opens the connection that will copy the database at path.
func openCopy(ctx context.Context, path string) (*fileCopy, error) {
	db, err := sql.Open("sqlite", dsn(path, defaultBusyTimeout))
	if err != nil {
		return nil, fmt.Errorf("sqlite: backup: open %s: %w", filepath.Base(path), err)
	}
	c := &fileCopy{name: filepath.Base(path), db: db}
	if c.conn, err = db.Conn(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("sqlite: backup: open %s: %w", c.name, err)
	}
	return c, nil
}

// begin starts the read transaction: a deferred BEGIN takes its snapshot
// of the WAL at its first read, which the query makes at once.
func (c *fileCopy) begin(ctx context.Context) error {
	if _, err := c.conn.ExecContext(ctx, `BEGIN`); err != nil {
		return fmt.Errorf("sqlite: backup: begin on %s: %w", c.name, err)
	}
	c.open = true
	var n int
	if err := c.conn.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master`).Scan(&n); err != nil {
		return fmt.Errorf("sqlite: backup: read %s: %w", c.name, err)
	}
	return nil
}

// backuper is the modernc.org/sqlite connection's online backup.
type backuper interface {
	NewBackup(dst string) (*sqlite.Backup, error)
}

// copyTo writes the database, as the open transaction sees it, into the
// new file dst. sqlite3_backup_step reads within the transaction its
// source connection has open, so writes committed meanwhile by the other
// connections do not enter the copy (nor restart it).
func (c *fileCopy) copyTo(ctx context.Context, dst string) error {
	err := c.conn.Raw(func(dc any) error {
		bk, ok := dc.(backuper)
		if !ok {
			return errors.New("the driver has no online backup")
		}
		b, err := bk.NewBackup(dst)
		if err != nil {
			return err
		}
		_, err = b.Step(-1)
		return errors.Join(err, b.Finish())
	})
	if err != nil {
		return fmt.Errorf("sqlite: backup: copy %s: %w", c.name, err)
	}
	return nil
}

// close ends the transaction and closes the connection.
func (c *fileCopy) close() error {
	var err error
	if c.open {
		_, err = c.conn.ExecContext(context.Background(), `ROLLBACK`)
	}
	return errors.Join(err, c.conn.Close(), c.db.Close())
}
