package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

func openBackend(t *testing.T, dir string) *Backend {
	t.Helper()
	b, err := Open(t.Context(), Config{Dir: dir, Forget: []string{"projector"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func countEvents(t *testing.T, path string) (n int64) {
	t.Helper()
	db, err := sql.Open("sqlite", dsn(path, time.Second, "query_only(true)"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRow(`SELECT count(*) FROM events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCopyReadsItsTransaction: a file copy holds what its read transaction
// saw when it began, not what committed between then and the copy.
func TestCopyReadsItsTransaction(t *testing.T) {
	ctx := t.Context()
	b := openBackend(t, t.TempDir())
	id := uuid.New()
	if err := b.Store.Append(ctx, id, 0, []store.Event{event(id, 1)}); err != nil {
		t.Fatal(err)
	}
	c, err := openCopy(ctx, filepath.Join(b.dir, "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if err := c.begin(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Store.Append(ctx, id, 1, []store.Event{event(id, 2)}); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "events.db")
	if err := c.copyTo(ctx, dst); err != nil {
		t.Fatal(err)
	}
	if n := countEvents(t, dst); n != 1 {
		t.Fatalf("the copy holds %d events; its transaction began when there was 1", n)
	}
}

// TestHoldStopsCommits: while the writer is held an append waits, and it
// commits once released.
func TestHoldStopsCommits(t *testing.T) {
	ctx := t.Context()
	b := openBackend(t, t.TempDir())
	release, err := b.Store.hold(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	id := uuid.New()
	go func() { done <- b.Store.Append(context.Background(), id, 0, []store.Event{event(id, 1)}) }()
	select {
	case err := <-done:
		t.Fatalf("an append returned (%v) while the writer was held", err)
	case <-time.After(200 * time.Millisecond):
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestBackupRestore: a backup verifies and restores into a data directory
// that opens with the same events, the relay's progress kept and the
// projector's dropped; it refuses a target that is not empty.
func TestBackupRestore(t *testing.T) {
	ctx := t.Context()
	b := openBackend(t, t.TempDir())
	for range 3 {
		id := uuid.New()
		if err := b.Store.Append(ctx, id, 0, []store.Event{event(id, 1)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []string{"projector", "relay"} {
		if err := b.Store.saveProgress(c, 2); err != nil {
			t.Fatal(err)
		}
	}
	target := filepath.Join(t.TempDir(), "b")
	m, err := b.Backup(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	if m.Head != 3 || len(m.Files) != len(backupFiles) || m.Files[3].Schema != latestSchema("sqlite/events") {
		t.Fatalf("manifest %+v", m)
	}
	entries, _ := os.ReadDir(target)
	if len(entries) != len(backupFiles)+1 {
		t.Fatalf("the backup directory holds %d files, want the %d databases and the manifest (no -wal, no -shm)", len(entries), len(backupFiles))
	}
	if _, err := b.Backup(ctx, target); !errors.Is(err, store.ErrBackupTarget) {
		t.Fatalf("a second backup into the same directory: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "restored")
	if _, err := Restore(target, dir); err != nil {
		t.Fatal(err)
	}
	r := openBackend(t, dir)
	if head, err := r.Store.Head(ctx); err != nil || head != 3 {
		t.Fatalf("restored head %d, %v", head, err)
	}
	for c, want := range map[string]int64{"projector": 0, "relay": 2} {
		if got, err := r.Store.savedProgress(ctx, c); err != nil || got != want {
			t.Fatalf("restored progress of %s: %d, %v; want %d", c, got, err, want)
		}
	}
}
