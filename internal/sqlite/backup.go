package sqlite

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/orderd/orderd/internal/store"
)

// ManifestName is the backup's manifest, written last: a directory without
// it is not a complete backup.
const ManifestName = "manifest.json"

// backupFiles are the files an online backup copies, each with its schema
// directory: snapshots.db first (see Backend.Backup). The read models (readmodels.db,
// views*.db) are not copied: their rows and the projector's feed progress
// (in events.db) live in different files, which no order of copies makes
// agree, so the copy forgets the projector's progress instead and a
// restored deployment projects its read models again from the first event.
//
// datakeys.db (the data keys of personal data, wrapped by the KEK, which is
// not copied: see docs/operations.md) begins after events.db, inside the
// hold: a key is created before the first event sealed with it appends, so
// every event of the copy finds its key. It is optional in a backup, which
// a build before crypto-shredding took without it.
var backupFiles = []struct {
	name, schema string
	optional     bool
}{
	{"snapshots.db", "sqlite/snapshots", false},
	{"keys.db", "sqlite/keys", false},
	{"relay.db", "sqlite/relay", false},
	{"events.db", "sqlite/events", false},
	{"datakeys.db", "sqlite/datakeys", true},
}

// holdReq asks the event writer to stop between two batches: it closes
// held once stopped, and commits nothing until release is closed.
type holdReq struct{ held, release chan struct{} }

// hold stops the event writer between two batches and returns the function
// that lets it go on. Appends and progress saves queue meanwhile.
func (s *Store) hold(ctx context.Context) (release func(), err error) {
	h := &holdReq{held: make(chan struct{}), release: make(chan struct{})}
	select {
	case s.holds <- h:
	case <-s.closing:
		return nil, store.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	<-h.held
	return func() { close(h.release) }, nil
}

// Backup copies the deployment, while it runs, into dir (absolute, missing
// or empty) with SQLite's online backup, and writes the manifest last.
// Backend.forget names feed consumers whose progress the copy drops, so
// that they start from the first event after a restore (the projector,
// whose read models it does not copy).
//
// One consistent point: each file is copied from one read transaction of
// its own (WAL lets it read beside the writers, and the copy sees nothing
// committed after the transaction began). snapshots.db's begins first,
// while everything runs: a snapshot is saved after the events it folds
// committed, so every snapshot of the copy is of events that events.db's
// later transaction holds. Then the event writer is held between two
// batches while the read transactions of keys.db, relay.db and events.db
// begin, so that no event commits in between: the three copies are then
// what a crash at that instant would leave, which orderd recovers from by
// design. A key's record, which names its aggregate, is durable before
// its command appends (Keys.Begin), so every event of the copy has its key, pending or
// answered, and a key answered before the hold names an event committed
// before it; the relay parks a dead letter in relay.db before its progress
// (saved in events.db by the held writer) moves past it, so no letter is
// lost and none names an event the copy lacks. The feed progress is in
// events.db itself, so the relay resumes where the copy stood. The hold
// lasts while three transactions begin, not while files are copied;
// writes wait, not fail, meanwhile (PausedFor).
func (b *Backend) Backup(ctx context.Context, dir string) (_ store.Backup, err error) {
	if !b.backing.TryLock() {
		return store.Backup{}, store.ErrBackupRunning
	}
	defer b.backing.Unlock()
	if err := prepareTarget(dir); err != nil {
		return store.Backup{}, err
	}
	copies := make([]*fileCopy, len(backupFiles))
	defer func() {
		for _, c := range copies {
			if c != nil {
				err = errors.Join(err, c.close())
			}
		}
		if err != nil { // leave the directory empty, as it was given
			for _, f := range backupFiles {
				_ = os.Remove(filepath.Join(dir, f.name))
			}
			_ = os.Remove(filepath.Join(dir, ManifestName+".tmp"))
		}
	}()
	for i, f := range backupFiles {
		if copies[i], err = openCopy(ctx, filepath.Join(b.dir, f.name)); err != nil {
			return store.Backup{}, err
		}
	}
	if err := copies[0].begin(ctx); err != nil { // snapshots.db
		return store.Backup{}, err
	}
	m := store.Backup{Format: 1}
	release, err := b.Store.hold(ctx)
	if err != nil {
		return store.Backup{}, err
	}
	start := time.Now()
	for _, c := range copies[1:] {
		if err = c.begin(ctx); err != nil {
			break
		}
	}
	release()
	m.TakenAt, m.PausedFor = start.UTC(), time.Since(start)
	if err != nil {
		return store.Backup{}, err
	}
	for i, f := range backupFiles {
		if err := copies[i].copyTo(ctx, filepath.Join(dir, f.name)); err != nil {
			return store.Backup{}, err
		}
	}
	if m.Head, err = forgetProgress(ctx, filepath.Join(dir, "events.db"), b.forget); err != nil {
		return store.Backup{}, err
	}
	for _, f := range backupFiles {
		bf, err := describe(ctx, dir, f.name)
		if err != nil {
			return store.Backup{}, err
		}
		m.Files = append(m.Files, bf)
	}
	return m, writeManifest(dir, m)
}

// prepareTarget makes dir, which must be absolute and missing or empty,
// and checks that files can be created in it.
func prepareTarget(dir string) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("%w: %q is not an absolute path", store.ErrBackupTarget, dir)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("%w: %v", store.ErrBackupTarget, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("%w: %v", store.ErrBackupTarget, err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("%w: %s is not empty", store.ErrBackupTarget, dir)
	}
	probe, err := os.CreateTemp(dir, ".probe")
	if err != nil {
		return fmt.Errorf("%w: %s is not writable: %v", store.ErrBackupTarget, dir, err)
	}
	_ = probe.Close()
	return os.Remove(probe.Name())
}

// forgetProgress drops the progress of the consumers named in the copy at
// path and returns the copy's head.
func forgetProgress(ctx context.Context, path string, consumers []string) (head int64, err error) {
	db, err := sql.Open("sqlite", dsn(path, defaultBusyTimeout))
	if err != nil {
		return 0, fmt.Errorf("sqlite: backup: open the copy: %w", err)
	}
	defer db.Close()
	// The copy left the source's WAL mode in the file; a backup is a
	// single file, and a restored orderd turns WAL on again.
	if _, err := db.ExecContext(ctx, `PRAGMA journal_mode = DELETE`); err != nil {
		return 0, fmt.Errorf("sqlite: backup: journal mode of the copy: %w", err)
	}
	for _, c := range consumers {
		if _, err := db.ExecContext(ctx, `DELETE FROM feed_progress WHERE consumer = ?`, c); err != nil {
			return 0, fmt.Errorf("sqlite: backup: forget %s's progress: %w", c, err)
		}
	}
	if err := db.QueryRowContext(ctx, `SELECT coalesce(max(position), 0) FROM events`).Scan(&head); err != nil {
		return 0, fmt.Errorf("sqlite: backup: head of the copy: %w", err)
	}
	return head, nil
}

// describe returns the manifest entry of dir/name: its size, checksum and
// last schema migration.
func describe(ctx context.Context, dir, name string) (store.BackupFile, error) {
	path := filepath.Join(dir, name)
	f := store.BackupFile{Name: name}
	var err error
	if f.Size, f.SHA256, err = checksum(path); err != nil {
		return f, err
	}
	db, err := sql.Open("sqlite", dsn(path, defaultBusyTimeout, "query_only(true)"))
	if err != nil {
		return f, fmt.Errorf("sqlite: backup: open %s: %w", name, err)
	}
	defer db.Close()
	if err := db.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&f.Schema); err != nil {
		return f, fmt.Errorf("sqlite: backup: schema of %s: %w", name, err)
	}
	return f, nil
}

// checksum returns the size and hex SHA-256 of the file at path.
func checksum(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", fmt.Errorf("sqlite: checksum %s: %w", path, err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// writeManifest writes m into dir, synced, under a temporary name renamed
// last, so that a manifest is only ever complete.
func writeManifest(dir string, m store.Backup) error {
	body, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, ManifestName+".tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("sqlite: backup: manifest: %w", err)
	}
	_, err = f.Write(append(body, '\n'))
	err = errors.Join(err, f.Sync(), f.Close())
	if err != nil {
		return fmt.Errorf("sqlite: backup: manifest: %w", err)
	}
	return os.Rename(tmp, filepath.Join(dir, ManifestName))
}
