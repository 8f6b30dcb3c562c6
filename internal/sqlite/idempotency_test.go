package sqlite

import (
	"errors"
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
