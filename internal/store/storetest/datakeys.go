package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// DataKeysOpener returns a new, empty store.DataKeys, closed in t.Cleanup.
type DataKeysOpener func(t *testing.T) store.DataKeys

// RunDataKeys runs the conformance suite of store.DataKeys against stores
// returned by open. Subtests run in parallel, each on its own store.
//
// Beyond the doc comments of store.DataKeys, the suite holds a backend to:
// Wrapped comes back byte for byte, Created to the millisecond in UTC.
func RunDataKeys(t *testing.T, open DataKeysOpener) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.DataKeys)
	}{
		{"CreateGet", testKeyCreateGet},
		{"FirstCreateWins", testKeyFirstCreateWins},
		{"Mint", testKeyMint},
		{"Erase", testKeyErase},
		{"Rewrap", testKeyRewrap},
		{"EraseBeatsRewrap", testKeyEraseBeatsRewrap},
		{"Scan", testKeyScan},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
}

func newWrapped(subject uuid.UUID, kek, wrapped string) store.WrappedKey {
	return store.WrappedKey{Subject: subject, KEK: kek, Wrapped: []byte(wrapped), Created: time.Now().UTC()}
}

func sameKey(t *testing.T, got, want store.WrappedKey) {
	t.Helper()
	if got.Subject != want.Subject || got.KEK != want.KEK || !bytes.Equal(got.Wrapped, want.Wrapped) {
		t.Errorf("key = %s/%s/%q, want %s/%s/%q", got.Subject, got.KEK, got.Wrapped, want.Subject, want.KEK, want.Wrapped)
	}
	if d := got.Created.Sub(want.Created); d < -time.Millisecond || d > time.Millisecond || got.Created.Location() != time.UTC {
		t.Errorf("Created = %v, want %v to the millisecond, in UTC", got.Created, want.Created)
	}
}

func mustCreate(t *testing.T, s store.DataKeys, k store.WrappedKey) store.WrappedKey {
	t.Helper()
	got, err := s.Create(context.Background(), k)
	if err != nil {
		t.Fatalf("Create(%s): %v", k.Subject, err)
	}
	return got
}

func testKeyCreateGet(t *testing.T, s store.DataKeys) {
	ctx := context.Background()
	if _, err := s.Get(ctx, uuid.New()); !errors.Is(err, store.ErrKeyNotFound) {
		t.Fatalf("Get(unknown) = %v, want ErrKeyNotFound", err)
	}
	k := newWrapped(uuid.New(), "kek-1", "wrapped\x00bytes\xff")
	sameKey(t, mustCreate(t, s, k), k)
	got, err := s.Get(ctx, k.Subject)
	if err != nil {
		t.Fatal(err)
	}
	sameKey(t, got, k)
	// The deployment's own secret is kept under the nil subject.
	nilKey := newWrapped(uuid.Nil, "kek-1", "deployment")
	mustCreate(t, s, nilKey)
	if got, err := s.Get(ctx, uuid.Nil); err != nil {
		t.Fatal(err)
	} else {
		sameKey(t, got, nilKey)
	}
}

func testKeyFirstCreateWins(t *testing.T, s store.DataKeys) {
	subject := uuid.New()
	const n = 8
	got := make([]store.WrappedKey, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := s.Create(context.Background(), newWrapped(subject, "kek-1", fmt.Sprintf("candidate-%d", i)))
			if err != nil {
				t.Errorf("Create %d: %v", i, err)
			}
			got[i] = k
		}()
	}
	wg.Wait()
	stored, err := s.Get(context.Background(), subject)
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range got {
		if !bytes.Equal(k.Wrapped, stored.Wrapped) {
			t.Errorf("Create %d returned %q, but %q is stored", i, k.Wrapped, stored.Wrapped)
		}
	}
	// A later Create with other bytes gets the stored key too.
	if again := mustCreate(t, s, newWrapped(subject, "kek-2", "late")); !bytes.Equal(again.Wrapped, stored.Wrapped) {
		t.Errorf("late Create returned %q, want the stored %q", again.Wrapped, stored.Wrapped)
	}
}

// testKeyMint: a minted key is stored like a created one, and never
// overwrites what Create, Erase or Rewrap wrote, before or after it.
func testKeyMint(t *testing.T, s store.DataKeys) {
	ctx := context.Background()
	k := newWrapped(uuid.New(), "kek-1", "minted")
	if err := s.Mint(ctx, k); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, k.Subject)
	if err != nil {
		t.Fatal(err)
	}
	sameKey(t, got, k)
	// A Create after it answers with the minted key.
	sameKey(t, mustCreate(t, s, newWrapped(k.Subject, "kek-1", "late")), k)
	// A Rewrap and an Erase after it apply.
	next := k
	next.KEK, next.Wrapped = "kek-2", []byte("minted, rewrapped")
	if ok, err := s.Rewrap(ctx, "kek-1", next); err != nil || !ok {
		t.Fatalf("Rewrap of a minted key = %v, %v; want true, nil", ok, err)
	}
	if got, err := s.Get(ctx, k.Subject); err != nil {
		t.Fatal(err)
	} else {
		sameKey(t, got, next)
	}
	if err := s.Erase(ctx, k.Subject, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, k.Subject); !errors.Is(err, store.ErrKeyErased) {
		t.Fatalf("Get after Erase of a minted key = %v, want ErrKeyErased", err)
	}

	// A Mint of a subject that has a key or a tombstone is a mistake,
	// which an engine may refuse or not see; either way the stored key or
	// tombstone stays.
	created := mustCreate(t, s, newWrapped(uuid.New(), "kek-1", "created"))
	_ = s.Mint(ctx, newWrapped(created.Subject, "kek-1", "minted over"))
	if got, err := s.Get(ctx, created.Subject); err != nil {
		t.Fatal(err)
	} else {
		sameKey(t, got, created)
	}
	_ = s.Mint(ctx, newWrapped(k.Subject, "kek-1", "minted over a tombstone"))
	if _, err := s.Get(ctx, k.Subject); !errors.Is(err, store.ErrKeyErased) {
		t.Fatalf("Get after a Mint over a tombstone = %v, want ErrKeyErased", err)
	}
}

func testKeyErase(t *testing.T, s store.DataKeys) {
	ctx := context.Background()
	k := newWrapped(uuid.New(), "kek-1", "secret")
	other := newWrapped(uuid.New(), "kek-1", "other")
	mustCreate(t, s, k)
	mustCreate(t, s, other)
	if err := s.Erase(ctx, k.Subject, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, k.Subject); !errors.Is(err, store.ErrKeyErased) {
		t.Fatalf("Get after Erase = %v, want ErrKeyErased", err)
	}
	if _, err := s.Create(ctx, newWrapped(k.Subject, "kek-1", "reborn")); !errors.Is(err, store.ErrKeyErased) {
		t.Fatalf("Create after Erase = %v, want ErrKeyErased", err)
	}
	if err := s.Erase(ctx, k.Subject, time.Now()); err != nil {
		t.Fatalf("second Erase: %v", err)
	}
	// Another subject's key is untouched.
	if got, err := s.Get(ctx, other.Subject); err != nil {
		t.Fatal(err)
	} else {
		sameKey(t, got, other)
	}
	// Erasing a subject that never had a key keeps it from getting one.
	never := uuid.New()
	if err := s.Erase(ctx, never, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, newWrapped(never, "kek-1", "x")); !errors.Is(err, store.ErrKeyErased) {
		t.Fatalf("Create after Erase of a keyless subject = %v, want ErrKeyErased", err)
	}
	if _, err := s.Get(ctx, never); !errors.Is(err, store.ErrKeyErased) {
		t.Fatalf("Get after Erase of a keyless subject = %v, want ErrKeyErased", err)
	}
}

func testKeyRewrap(t *testing.T, s store.DataKeys) {
	ctx := context.Background()
	k := mustCreate(t, s, newWrapped(uuid.New(), "kek-1", "under-1"))
	next := k
	next.KEK, next.Wrapped = "kek-2", []byte("under-2")
	if ok, err := s.Rewrap(ctx, "kek-0", next); err != nil || ok {
		t.Fatalf("Rewrap from the wrong KEK = %v, %v; want false, nil", ok, err)
	}
	if ok, err := s.Rewrap(ctx, "kek-1", next); err != nil || !ok {
		t.Fatalf("Rewrap = %v, %v; want true, nil", ok, err)
	}
	got, err := s.Get(ctx, k.Subject)
	if err != nil {
		t.Fatal(err)
	}
	sameKey(t, got, next)
	// A second rotation from kek-1 lost the race: nothing changes.
	stale := k
	stale.KEK, stale.Wrapped = "kek-3", []byte("under-3")
	if ok, err := s.Rewrap(ctx, "kek-1", stale); err != nil || ok {
		t.Fatalf("stale Rewrap = %v, %v; want false, nil", ok, err)
	}
	// Rewrap of an unknown subject creates nothing.
	if ok, err := s.Rewrap(ctx, "kek-1", newWrapped(uuid.New(), "kek-2", "x")); err != nil || ok {
		t.Fatalf("Rewrap of an unknown subject = %v, %v; want false, nil", ok, err)
	}
}

// testKeyEraseBeatsRewrap: a rotation racing an erasure never brings the
// key back.
func testKeyEraseBeatsRewrap(t *testing.T, s store.DataKeys) {
	ctx := context.Background()
	for i := range 5 {
		k := mustCreate(t, s, newWrapped(uuid.New(), "kek-1", fmt.Sprintf("k%d", i)))
		next := k
		next.KEK, next.Wrapped = "kek-2", []byte("rewrapped")
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := s.Rewrap(ctx, "kek-1", next); err != nil {
				t.Errorf("Rewrap: %v", err)
			}
		}()
		go func() {
			defer wg.Done()
			if err := s.Erase(ctx, k.Subject, time.Now()); err != nil {
				t.Errorf("Erase: %v", err)
			}
		}()
		wg.Wait()
		if _, err := s.Get(ctx, k.Subject); !errors.Is(err, store.ErrKeyErased) {
			t.Fatalf("Get after racing Erase and Rewrap = %v, want ErrKeyErased", err)
		}
		if ok, err := s.Rewrap(ctx, "kek-2", next); err != nil || ok {
			t.Fatalf("Rewrap of an erased key = %v, %v; want false, nil", ok, err)
		}
	}
}

func testKeyScan(t *testing.T, s store.DataKeys) {
	ctx := context.Background()
	const n = 260 // more than one page of either engine
	want := map[uuid.UUID]string{}
	var erased []uuid.UUID
	for i := range n {
		k := mustCreate(t, s, newWrapped(uuid.New(), "kek-1", fmt.Sprintf("key-%d", i)))
		if i%10 == 0 {
			erased = append(erased, k.Subject)
			continue
		}
		want[k.Subject] = string(k.Wrapped)
	}
	for _, id := range erased {
		if err := s.Erase(ctx, id, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	got := map[uuid.UUID]string{}
	if err := s.Scan(ctx, func(k store.WrappedKey) error {
		if _, dup := got[k.Subject]; dup {
			t.Errorf("Scan gave %s twice", k.Subject)
		}
		got[k.Subject] = string(k.Wrapped)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("Scan gave %d keys, want %d", len(got), len(want))
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("Scan: %s = %q, want %q", id, got[id], w)
		}
	}
	stop := errors.New("stop")
	calls := 0
	if err := s.Scan(ctx, func(store.WrappedKey) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Errorf("Scan with a failing fn = %v after %d calls, want stop after 1", err, calls)
	}
}
