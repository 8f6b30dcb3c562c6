package sqlite

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/storetest"
)

func openKeys(t *testing.T, path string, opts KeysOptions) *Keys {
	t.Helper()
	k, err := OpenKeys(path, opts)
	if err != nil {
		t.Fatalf("OpenKeys: %v", err)
	}
	t.Cleanup(func() {
		if err := k.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return k
}

func TestIdempotencyConformance(t *testing.T) {
	storetest.RunIdempotency(t, func(t *testing.T) store.Idempotency {
		return openKeys(t, filepath.Join(t.TempDir(), "keys.db"), KeysOptions{})
	})
}

// TestIdempotencyConformanceJournaled runs the suite on Keys as orderd
// opens them: with the event store, whose writer journals the records.
func TestIdempotencyConformanceJournaled(t *testing.T) {
	storetest.RunIdempotency(t, func(t *testing.T) store.Idempotency {
		dir := t.TempDir()
		events := mustOpen(t, filepath.Join(dir, "events.db"), nil)
		return openKeys(t, filepath.Join(dir, "keys.db"), KeysOptions{Events: events})
	})
}

// TestKeysPurge: the background purge deletes expired records, and only
// those; a record survives a reopen.
func TestKeysPurge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	k := openKeys(t, path, KeysOptions{PurgeEvery: 50 * time.Millisecond})
	ctx := t.Context()
	now := time.Now().UTC()
	begin := func(key string, ttl time.Duration) {
		t.Helper()
		rec := store.IdempotencyRecord{Key: key, ID: uuid.New(), Fingerprint: []byte{1}, Owner: uuid.New(),
			Created: now, Updated: now, Expires: now.Add(ttl)}
		if _, began, err := k.Begin(ctx, rec); err != nil || !began {
			t.Fatalf("Begin(%s) = %v, %v", key, began, err)
		}
	}
	begin("short", 200*time.Millisecond)
	begin("long", time.Hour)
	rows := func() (n int) {
		t.Helper()
		if err := k.r.QueryRowContext(ctx, `SELECT count(*) FROM idempotency_keys`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	deadline := time.Now().Add(10 * time.Second)
	for rows() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d rows 10s after the short key expired; want the purge to leave 1", rows())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, found, err := k.Get(ctx, "long"); err != nil || !found {
		t.Fatalf("Get(long) = %v, %v after the purge", found, err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	k2 := openKeys(t, path, KeysOptions{})
	if _, found, err := k2.Get(ctx, "long"); err != nil || !found {
		t.Fatalf("Get(long) after a reopen = %v, %v", found, err)
	}
	if _, _, err := k.Get(ctx, "long"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Get after Close: %v, want ErrClosed", err)
	}
}

// TestIdempotencyReopenAbandonsPending: a record left pending when the
// key store was last open (its process died: only one process opens it)
// reads as abandoned after the next open, keeping its owner, id and
// aggregate, so
// that the next request with the key settles it at once; done and
// abandoned records are left as they were.
func TestIdempotencyReopenAbandonsPending(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	k := openKeys(t, path, KeysOptions{})
	ctx := t.Context()
	now := time.Now().UTC()
	agg := uuid.New()
	begin := func(key string) store.IdempotencyRecord {
		rec := store.IdempotencyRecord{Key: key, ID: uuid.New(), Fingerprint: []byte{1}, Owner: uuid.New(), AggregateID: agg,
			Process: store.Process{Instance: "a", Boot: uuid.New()}, Created: now, Updated: now, Expires: now.Add(time.Hour)}
		if _, began, err := k.Begin(ctx, rec); err != nil || !began {
			t.Fatalf("Begin(%s): %v, %v", key, began, err)
		}
		return rec
	}
	pending, done := begin("pending"), begin("done")
	if err := k.Complete(ctx, done.Claim(), store.IdempotentResponse{Status: 201, Body: []byte("{}")}, now); err != nil {
		t.Fatal(err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}

	k = openKeys(t, path, KeysOptions{})
	got, found, err := k.Get(ctx, "pending")
	if err != nil || !found || got.State != store.Abandoned || got.Owner != pending.Owner || got.ID != pending.ID ||
		got.AggregateID != agg || got.Process != pending.Process {
		t.Fatalf("the pending record after a reopen: %+v, %v, %v; want it abandoned, owner, id, process and aggregate kept", got, found, err)
	}
	if got, _, err := k.Get(ctx, "done"); err != nil || got.State != store.Done || got.Response.Status != 201 {
		t.Fatalf("the done record after a reopen: %+v, %v", got, err)
	}
	if ok, err := k.Takeover(ctx, got.Claim(), uuid.New(), store.Process{Instance: "b", Boot: uuid.New()}, time.Now()); err != nil || !ok {
		t.Fatalf("Takeover of the abandoned record: %v, %v", ok, err)
	}
}

// TestJournalRecoversLostKeys: the record of a keyed command that appended
// is durable with its events even when keys.db lost it (as a crash of the
// machine may lose its WAL's unsynced writes: simulated by a keys.db
// replaced by an empty one). The next open takes it back from events.db's
// journal, abandoned (its attempt died), with its id, fingerprint, owner
// and aggregate, so that a retry finds the events; the record of a command
// whose append failed (a conflict) is not journaled, nor one that
// appended nothing; and the journal is emptied once keys.db holds the
// records.
func TestJournalRecoversLostKeys(t *testing.T) {
	dir := t.TempDir()
	eventsPath, keysPath := filepath.Join(dir, "events.db"), filepath.Join(dir, "keys.db")
	events := mustOpen(t, eventsPath, nil)
	k := openKeys(t, keysPath, KeysOptions{Events: events})
	ctx := t.Context()
	now := time.Now().UTC()
	process := store.Process{Instance: "a", Boot: uuid.New()}
	begin := func(key string, agg uuid.UUID) store.IdempotencyRecord {
		rec := store.IdempotencyRecord{Key: key, ID: uuid.New(), Fingerprint: []byte(key), Owner: uuid.New(), AggregateID: agg,
			Process: process, Created: now, Updated: now, Expires: now.Add(time.Hour)}
		if _, began, err := k.Begin(ctx, rec); err != nil || !began {
			t.Fatalf("Begin(%s): %v, %v", key, began, err)
		}
		return rec
	}
	keyed := func(rec store.IdempotencyRecord, seq int64) []store.Event {
		e := event(rec.AggregateID, seq)
		e.Metadata = map[string]string{store.MetaIdempotencyKey: rec.Key, store.MetaIdempotencyRecord: rec.ID.String()}
		return []store.Event{e}
	}
	appended := begin("appended", uuid.New())
	if err := events.Append(ctx, appended.AggregateID, 0, keyed(appended, 1)); err != nil {
		t.Fatal(err)
	}
	// Two events in one append, to an aggregate that has one already.
	two := begin("two", uuid.New())
	if err := events.Append(ctx, two.AggregateID, 0, []store.Event{event(two.AggregateID, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := events.Append(ctx, two.AggregateID, 1, append(keyed(two, 2), keyed(two, 3)...)); err != nil {
		t.Fatal(err)
	}
	conflicted := begin("conflicted", appended.AggregateID)
	if err := events.Append(ctx, conflicted.AggregateID, 0, keyed(conflicted, 1)); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Append over an existing aggregate: %v; want a conflict", err)
	}
	begin("refused", uuid.New()) // appends nothing
	journaled := func() int64 {
		t.Helper()
		var n int64
		if err := events.r.QueryRowContext(ctx, `SELECT count(*) FROM idempotency_journal`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := journaled(); n != 2 {
		t.Fatalf("%d rows in the journal; want 2, the appends that committed", n)
	}

	// The machine crashed: keys.db lost everything not synced.
	if err := errors.Join(k.Close(), events.Close()); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(keysPath + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	events = mustOpen(t, eventsPath, nil)
	k = openKeys(t, keysPath, KeysOptions{Events: events})
	for _, want := range []store.IdempotencyRecord{appended, two} {
		got, found, err := k.Get(ctx, want.Key)
		if err != nil || !found || got.State != store.Abandoned || got.ID != want.ID || got.Owner != want.Owner ||
			string(got.Fingerprint) != want.Key || got.AggregateID != want.AggregateID || got.Process != process ||
			!got.Expires.Equal(want.Expires.Truncate(time.Millisecond)) && !got.Expires.Equal(want.Expires) {
			t.Fatalf("%s after the crash: %+v, %v, %v; want %+v, abandoned", want.Key, got, found, err, want)
		}
	}
	for _, key := range []string{"conflicted", "refused"} {
		if _, found, err := k.Get(ctx, key); err != nil || found {
			t.Fatalf("%s after the crash: found %v, %v; want no record (nothing of it committed)", key, found, err)
		}
	}
	if n := journaled(); n != 0 {
		t.Fatalf("%d rows in the journal after the open; want none", n)
	}
	// Reopened, nothing is taken back twice over a record that moved on.
	got, _, _ := k.Get(ctx, "appended")
	if ok, err := k.Takeover(ctx, got.Claim(), uuid.New(), process, time.Now()); err != nil || !ok {
		t.Fatalf("Takeover: %v, %v", ok, err)
	}
}

// TestJournalTrim: the journal keeps a row only until keys.db holds its
// record durably.
func TestJournalTrim(t *testing.T) {
	dir := t.TempDir()
	events := mustOpen(t, filepath.Join(dir, "events.db"), nil)
	k := openKeys(t, filepath.Join(dir, "keys.db"), KeysOptions{Events: events})
	ctx := t.Context()
	now := time.Now().UTC()
	for i := range 3 {
		rec := store.IdempotencyRecord{Key: fmt.Sprint("k", i), ID: uuid.New(), Fingerprint: []byte{1}, Owner: uuid.New(),
			AggregateID: uuid.New(), Created: now, Updated: now, Expires: now.Add(time.Hour)}
		if _, began, err := k.Begin(ctx, rec); err != nil || !began {
			t.Fatalf("Begin: %v, %v", began, err)
		}
		e := event(rec.AggregateID, 1)
		e.Metadata = map[string]string{store.MetaIdempotencyKey: rec.Key, store.MetaIdempotencyRecord: rec.ID.String()}
		if err := events.Append(ctx, rec.AggregateID, 0, []store.Event{e}); err != nil {
			t.Fatal(err)
		}
	}
	if head, err := events.journalHead(ctx); err != nil || head != 3 {
		t.Fatalf("journal head %d, %v; want 3", head, err)
	}
	if err := k.trimJournal(ctx); err != nil {
		t.Fatal(err)
	}
	if head, err := events.journalHead(ctx); err != nil || head != 0 {
		t.Fatalf("journal head after the trim %d, %v; want it empty", head, err)
	}
	if len(events.journal.claims) != 0 {
		t.Fatalf("%d claims kept after their appends committed", len(events.journal.claims))
	}
}
