package storetest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// IdempotencyOpener returns a new, empty store.Idempotency, closed in
// t.Cleanup.
type IdempotencyOpener func(t *testing.T) store.Idempotency

// RunIdempotency runs the conformance suite of store.Idempotency against
// stores returned by open. Subtests run in parallel, each on its own store.
//
// It is apart from Run because a backend may keep its keys apart from its
// events (SQLite keeps them in a file of its own, so that they never take
// the event writer's lock), and then the key store is not the store.Store.
//
// What the suite holds a backend to, beyond the doc comments of
// store.Idempotency: times come back to the millisecond at least; the
// response comes back byte for byte, headers included; the process of the
// owner comes back with every read, and moves with a takeover; a record
// expires no earlier than its Expires and no later than a few seconds
// after.
func RunIdempotency(t *testing.T, open IdempotencyOpener) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Idempotency)
	}{
		{"RoundTrip", testKeyRoundTrip},
		{"BeginOnce", testKeyBeginOnce},
		{"OwnerOnly", testKeyOwnerOnly},
		{"Takeover", testKeyTakeover},
		{"TakeoverRace", testKeyTakeoverRace},
		{"Expiry", testKeyExpiry},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
}

// newKey returns the record a first request with key would begin, expiring
// after ttl.
func newKey(key string, body string, ttl time.Duration) store.IdempotencyRecord {
	now := time.Now().UTC()
	fp := sha256.Sum256([]byte("POST\n/v1/widgets\n" + body))
	return store.IdempotencyRecord{
		Key: key, ID: uuid.Must(uuid.NewV7()), Fingerprint: fp[:], Owner: uuid.New(), AggregateID: uuid.New(),
		Process: newProcess("suite"), Created: now, Updated: now, Expires: now.Add(ttl),
	}
}

// newProcess returns a boot of instance.
func newProcess(instance string) store.Process {
	return store.Process{Instance: instance, Boot: uuid.New()}
}

func mustBegin(t *testing.T, k store.Idempotency, rec store.IdempotencyRecord, want bool) store.IdempotencyRecord {
	t.Helper()
	got, began, err := k.Begin(testContext(t), rec)
	if err != nil || began != want {
		t.Fatalf("Begin(%q) began %v, %v; want %v", rec.Key, began, err, want)
	}
	return got
}

func mustGet(t *testing.T, k store.Idempotency, key string) store.IdempotencyRecord {
	t.Helper()
	got, found, err := k.Get(testContext(t), key)
	if err != nil || !found {
		t.Fatalf("Get(%q) = found %v, %v; want found", key, found, err)
	}
	return got
}

// keyDiff compares what a backend must keep of a record.
func keyDiff(g, w store.IdempotencyRecord) string {
	ms := func(t time.Time) time.Time { return t.Truncate(time.Millisecond) }
	switch {
	case g.Key != w.Key || g.ID != w.ID:
		return "key/ID " + g.Key + "/" + g.ID.String() + ", want " + w.Key + "/" + w.ID.String()
	case !bytes.Equal(g.Fingerprint, w.Fingerprint):
		return "fingerprint differs"
	case g.Owner != w.Owner:
		return "owner " + g.Owner.String() + ", want " + w.Owner.String()
	case g.Process != w.Process:
		return "process " + g.Process.Instance + "/" + g.Process.Boot.String() + ", want " + w.Process.Instance + "/" + w.Process.Boot.String()
	case g.State != w.State:
		return "state " + string(g.State) + ", want " + string(w.State)
	case g.AggregateID != w.AggregateID:
		return "aggregate " + g.AggregateID.String() + ", want " + w.AggregateID.String()
	case g.Response.Status != w.Response.Status || !bytes.Equal(g.Response.Body, w.Response.Body) ||
		!(len(g.Response.Header) == 0 && len(w.Response.Header) == 0) && !maps.Equal(g.Response.Header, w.Response.Header):
		return "response differs"
	case !ms(g.Created).Equal(ms(w.Created)) || !ms(g.Expires).Equal(ms(w.Expires)):
		return "created/expires " + g.Created.String() + "/" + g.Expires.String() + ", want " + w.Created.String() + "/" + w.Expires.String()
	case g.Created.Location() != time.UTC:
		return "times are not in UTC"
	}
	return ""
}

// testKeyRoundTrip: a record begun (naming its aggregate, or none) and
// completed reads back as it was written, response bytes and headers
// included; a second Begin of the key returns it rather than beginning.
func testKeyRoundTrip(t *testing.T, k store.Idempotency) {
	ctx := testContext(t)
	rec := newKey("round-trip "+uuid.NewString(), `{"n":1}`, time.Hour)
	mustBegin(t, k, rec, true)
	want := rec
	want.State = store.Pending
	if diff := keyDiff(mustGet(t, k, rec.Key), want); diff != "" {
		t.Fatalf("after Begin: %s", diff)
	}
	agg := rec.AggregateID
	resp := store.IdempotentResponse{
		Status: 201,
		Header: map[string]string{"Content-Type": "application/json", "ETag": `"1"`, "Location": "/v1/widgets/" + agg.String()},
		Body:   []byte("{\"id\":\"" + agg.String() + "\",\"version\":1}\n\x00\xff"),
	}
	if err := k.Complete(ctx, rec.Claim(), resp, time.Now()); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	want.State, want.Response = store.Done, resp
	if diff := keyDiff(mustGet(t, k, rec.Key), want); diff != "" {
		t.Fatalf("after Complete: %s", diff)
	}
	again := newKey(rec.Key, `{"n":2}`, time.Hour)
	if diff := keyDiff(mustBegin(t, k, again, false), want); diff != "" {
		t.Fatalf("Begin of a used key returned another record: %s", diff)
	}
	none := newKey("no aggregate "+uuid.NewString(), `{}`, time.Hour)
	none.AggregateID = uuid.Nil
	mustBegin(t, k, none, true)
	if got := mustGet(t, k, none.Key); got.AggregateID != uuid.Nil {
		t.Fatalf("a record begun without an aggregate names %s", got.AggregateID)
	}
	if _, found, err := k.Get(ctx, "never used "+uuid.NewString()); err != nil || found {
		t.Fatalf("Get of an unknown key = found %v, %v; want not found", found, err)
	}
}

// testKeyBeginOnce: 32 concurrent Begins of one key; exactly one begins,
// and every other returns the winner's record.
func testKeyBeginOnce(t *testing.T, k store.Idempotency) {
	key := "race " + uuid.NewString()
	const n = 32
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []store.IdempotencyRecord
		seen    []store.IdempotencyRecord
	)
	for range n {
		wg.Go(func() {
			got, began, err := k.Begin(testContext(t), newKey(key, `{}`, time.Hour))
			if err != nil {
				t.Errorf("Begin: %v", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if began {
				winners = append(winners, got)
			} else {
				seen = append(seen, got)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if len(winners) != 1 {
		t.Fatalf("%d of %d concurrent Begins of one key began; want 1", len(winners), n)
	}
	for _, s := range seen {
		if s.Owner != winners[0].Owner || s.ID != winners[0].ID || s.State != store.Pending || s.Process != winners[0].Process {
			t.Fatalf("a losing Begin saw owner %s, record %s, %s; want the winner's %s, %s, pending",
				s.Owner, s.ID, s.State, winners[0].Owner, winners[0].ID)
		}
	}
}

// testKeyOwnerOnly: an attempt that does not own the record can change
// nothing of it.
func testKeyOwnerOnly(t *testing.T, k store.Idempotency) {
	ctx := testContext(t)
	rec := newKey("owner "+uuid.NewString(), `{}`, time.Hour)
	mustBegin(t, k, rec, true)
	stranger := rec.Claim()
	stranger.Owner = uuid.New()
	for name, err := range map[string]error{
		"Complete": k.Complete(ctx, stranger, store.IdempotentResponse{Status: 200}, time.Now()),
		"Abandon":  k.Abandon(ctx, stranger, time.Now()),
	} {
		if !errors.Is(err, store.ErrNotOwner) {
			t.Errorf("%s by a stranger: %v, want ErrNotOwner", name, err)
		}
	}
	unknown := stranger
	unknown.Key = "unknown " + uuid.NewString()
	if err := k.Complete(ctx, unknown, store.IdempotentResponse{Status: 200}, time.Now()); !errors.Is(err, store.ErrNotOwner) {
		t.Errorf("Complete of an unknown key: %v, want ErrNotOwner", err)
	}
	want := rec
	want.State = store.Pending
	if diff := keyDiff(mustGet(t, k, rec.Key), want); diff != "" {
		t.Fatalf("a stranger changed the record: %s", diff)
	}
}

// testKeyTakeover: a pending or abandoned record passes to a new attempt,
// which keeps its id and aggregate; the old owner can then change nothing;
// a done record cannot be taken.
func testKeyTakeover(t *testing.T, k store.Idempotency) {
	ctx := testContext(t)
	rec := newKey("takeover "+uuid.NewString(), `{}`, time.Hour)
	mustBegin(t, k, rec, true)
	agg := rec.AggregateID
	wrong := rec.Claim()
	wrong.Owner = uuid.New()
	if ok, err := k.Takeover(ctx, wrong, uuid.New(), newProcess("stranger"), time.Now()); err != nil || ok {
		t.Fatalf("Takeover from a non-owner = %v, %v; want false", ok, err)
	}
	// A retry on another instance takes it, or on a new boot of the same.
	second, secondProcess := uuid.New(), newProcess("suite-2")
	if ok, err := k.Takeover(ctx, rec.Claim(), second, secondProcess, time.Now()); err != nil || !ok {
		t.Fatalf("Takeover of a pending record = %v, %v; want true", ok, err)
	}
	if err := k.Complete(ctx, rec.Claim(), store.IdempotentResponse{Status: 200}, time.Now()); !errors.Is(err, store.ErrNotOwner) {
		t.Fatalf("Complete by the owner taken over: %v, want ErrNotOwner", err)
	}
	now := rec.Claim()
	now.Owner = second
	if err := k.Abandon(ctx, now, time.Now()); err != nil {
		t.Fatalf("Abandon: %v", err)
	}
	want := rec
	want.Owner, want.Process, want.State, want.AggregateID = second, secondProcess, store.Abandoned, agg
	if diff := keyDiff(mustGet(t, k, rec.Key), want); diff != "" {
		t.Fatalf("after Takeover and Abandon: %s", diff)
	}
	third, thirdProcess := uuid.New(), newProcess("suite-2")
	if ok, err := k.Takeover(ctx, now, third, thirdProcess, time.Now()); err != nil || !ok {
		t.Fatalf("Takeover of an abandoned record = %v, %v; want true", ok, err)
	}
	want.Owner, want.Process, want.State = third, thirdProcess, store.Pending
	if diff := keyDiff(mustGet(t, k, rec.Key), want); diff != "" {
		t.Fatalf("after the second Takeover: %s", diff)
	}
	now.Owner = third
	if err := k.Complete(ctx, now, store.IdempotentResponse{Status: 200, Body: []byte("{}")}, time.Now()); err != nil {
		t.Fatalf("Complete by the new owner: %v", err)
	}
	if ok, err := k.Takeover(ctx, now, uuid.New(), newProcess("suite"), time.Now()); err != nil || ok {
		t.Fatalf("Takeover of a done record = %v, %v; want false", ok, err)
	}
}

// testKeyTakeoverRace: of concurrent takeovers from one owner, one wins.
func testKeyTakeoverRace(t *testing.T, k store.Idempotency) {
	rec := newKey("takeover race "+uuid.NewString(), `{}`, time.Hour)
	mustBegin(t, k, rec, true)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins int
	)
	for range 8 {
		wg.Go(func() {
			ok, err := k.Takeover(testContext(t), rec.Claim(), uuid.New(), newProcess("suite"), time.Now())
			if err != nil {
				t.Errorf("Takeover: %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if ok {
				wins++
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d of 8 concurrent takeovers from one owner won; want 1", wins)
	}
}

// testKeyExpiry: after its Expires (and not before) a key is free: Get
// finds nothing, its owner can change nothing, and Begin starts a new
// record with another id.
func testKeyExpiry(t *testing.T, k store.Idempotency) {
	const ttl = time.Second
	first := newKey("expiry "+uuid.NewString(), `{}`, ttl)
	mustBegin(t, k, first, true)
	var (
		next     store.IdempotencyRecord
		returned time.Time // a Begin saw the key free at some time before this
	)
	for {
		next = newKey(first.Key, `{"other":true}`, time.Hour)
		_, began, err := k.Begin(testContext(t), next)
		returned = time.Now()
		if err != nil {
			t.Fatalf("Begin: %v", err)
		}
		if began {
			break
		}
		if time.Since(first.Created) > guard {
			t.Fatalf("the key did not expire within %s of a %s ttl", guard, ttl)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Not next.Created: a Begin that started before the expiry and ran
	// past it (a slow round on a loaded node) rightly finds the key free.
	if returned.Before(first.Expires) {
		t.Fatalf("Begin began anew and returned at %v, before the first record expired at %v", returned, first.Expires)
	}
	if got := mustGet(t, k, first.Key); got.ID != next.ID || got.Owner != next.Owner || got.Process != next.Process ||
		got.AggregateID != next.AggregateID {
		t.Fatalf("after expiry the key holds record %s of %s on %s; want the new %s of %s on %s",
			got.ID, got.Owner, got.AggregateID, next.ID, next.Owner, next.AggregateID)
	}
	ctx := testContext(t)
	if err := k.Complete(ctx, first.Claim(), store.IdempotentResponse{Status: 200}, time.Now()); !errors.Is(err, store.ErrNotOwner) {
		t.Fatalf("Complete by the expired record's owner: %v, want ErrNotOwner", err)
	}

	lone := newKey("expiry alone "+uuid.NewString(), `{}`, ttl)
	mustBegin(t, k, lone, true)
	for {
		_, found, err := k.Get(ctx, lone.Key)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if !found {
			break
		}
		if time.Since(lone.Created) > guard {
			t.Fatalf("Get still finds the key %s after a %s ttl", guard, ttl)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if time.Now().Before(lone.Expires) {
		t.Fatalf("Get lost the key before it expired")
	}
}
