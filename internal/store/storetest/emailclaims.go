package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// EmailClaimsOpener returns a new, empty store.EmailClaims, closed in
// t.Cleanup, and the function that closes it (nil when it cannot be closed
// apart), which the suite may call earlier: a Close error of
// store.ErrClosed in the cleanup is expected then.
type EmailClaimsOpener func(t *testing.T) (claims store.EmailClaims, close func() error)

// RunEmailClaims runs the conformance suite of store.EmailClaims against
// stores returned by open. Subtests run in parallel, each on its own store.
//
// Beyond the doc comments of store.EmailClaims, the suite holds a backend
// to: every field of a row comes back as written, At to the millisecond in
// UTC; and every call after the store's Close returns store.ErrClosed.
func RunEmailClaims(t *testing.T, open EmailClaimsOpener) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.EmailClaims, func() error)
	}{
		{"ClaimSeesEarlier", testClaimSeesEarlier},
		{"ClaimRace", testClaimRace},
		{"Drop", testClaimDrop},
		{"Scan", testClaimScan},
		{"Closed", testClaimClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			claims, closeFn := open(t)
			tc.fn(t, claims, closeFn)
		})
	}
}

// newClaimRow returns a row of a fresh attempt of customer at version
// since, claimed now.
func newClaimRow(customer uuid.UUID, since int64) store.ClaimRow {
	return store.ClaimRow{Attempt: uuid.New(), Customer: customer, Since: since, At: time.Now().UTC().Truncate(time.Millisecond)}
}

func mustClaim(t *testing.T, s store.EmailClaims, key uuid.UUID, row store.ClaimRow) []store.ClaimRow {
	t.Helper()
	got, err := s.Claim(testContext(t), key, row)
	if err != nil {
		t.Fatalf("Claim(%s, %s): %v", key, row.Attempt, err)
	}
	return got
}

func mustRows(t *testing.T, s store.EmailClaims, key uuid.UUID) []store.ClaimRow {
	t.Helper()
	got, err := s.Rows(testContext(t), key)
	if err != nil {
		t.Fatalf("Rows(%s): %v", key, err)
	}
	return got
}

func mustDrop(t *testing.T, s store.EmailClaims, key uuid.UUID, rows ...store.ClaimRow) {
	t.Helper()
	if err := s.Drop(testContext(t), key, rows...); err != nil {
		t.Fatalf("Drop(%s, %d rows): %v", key, len(rows), err)
	}
}

// sameRows fails t unless got holds exactly want's rows, field for field,
// each once and At in UTC.
func sameRows(t *testing.T, what string, got, want []store.ClaimRow) {
	t.Helper()
	byAttempt := make(map[uuid.UUID]store.ClaimRow, len(want))
	for _, r := range want {
		byAttempt[r.Attempt] = r
	}
	seen := map[uuid.UUID]bool{}
	for _, r := range got {
		w, ok := byAttempt[r.Attempt]
		switch {
		case !ok:
			t.Errorf("%s: row %s (customer %s) was not written under this key or was dropped", what, r.Attempt, r.Customer)
		case seen[r.Attempt]:
			t.Errorf("%s: row %s twice", what, r.Attempt)
		case r.Customer != w.Customer || r.Since != w.Since || !r.At.Equal(w.At) || r.At.Location() != time.UTC:
			t.Errorf("%s: row %s = %s@%d at %v, want %s@%d at %v in UTC", what, r.Attempt,
				r.Customer, r.Since, r.At, w.Customer, w.Since, w.At)
		}
		seen[r.Attempt] = true
	}
	for _, w := range want {
		if !seen[w.Attempt] {
			t.Errorf("%s: row %s (customer %s) missing", what, w.Attempt, w.Customer)
		}
	}
}

// scanKey returns the rows Scan gives under key.
func scanKey(t *testing.T, s store.EmailClaims, key uuid.UUID) []store.ClaimRow {
	t.Helper()
	var rows []store.ClaimRow
	if err := s.Scan(testContext(t), func(k uuid.UUID, r store.ClaimRow) error {
		if k == key {
			rows = append(rows, r)
		}
		return nil
	}); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	return rows
}

// testClaimSeesEarlier: each Claim answers with its own row and every row
// written under its key before, fields intact, and no row of another key;
// a customer's second attempt is a row of its own beside its first.
func testClaimSeesEarlier(t *testing.T, s store.EmailClaims, _ func() error) {
	key, other := uuid.New(), uuid.New()
	alice, bob := uuid.New(), uuid.New()
	rows := []store.ClaimRow{
		newClaimRow(alice, 0),
		newClaimRow(bob, 1<<40+7),
		newClaimRow(alice, 3), // alice again: a second attempt, a second row
	}
	rows[1].At = rows[1].At.Add(-time.Hour) // a claimant whose clock is behind
	var written []store.ClaimRow
	for i, r := range rows {
		mustClaim(t, s, other, newClaimRow(uuid.New(), int64(i)))
		written = append(written, r)
		sameRows(t, fmt.Sprintf("Claim %d", i), mustClaim(t, s, key, r), written)
		sameRows(t, fmt.Sprintf("Rows after Claim %d", i), mustRows(t, s, key), written)
	}
	// Claims of a key never written start from nothing.
	sameRows(t, "Rows of a fresh key", mustRows(t, s, uuid.New()), nil)
	lone := newClaimRow(alice, 9)
	sameRows(t, "Claim of a fresh key", mustClaim(t, s, uuid.New(), lone), []store.ClaimRow{lone})
}

// testClaimRace: claimants of one key at once, each with a row of its
// own; of every two whose Claims returned, at least one saw the other's
// row, which is what lets at most one of them go on. Each round is a fresh
// key, so that the claimants meet on an empty one.
func testClaimRace(t *testing.T, s store.EmailClaims, _ func() error) {
	const claimants, rounds = 8, 50
	for round := range rounds {
		ctx := testContext(t)
		key := uuid.New()
		rows := make([]store.ClaimRow, claimants)
		for i := range rows {
			rows[i] = newClaimRow(uuid.New(), int64(i))
		}
		saw := make([]map[uuid.UUID]bool, claimants)
		errs := make([]error, claimants)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range claimants {
			wg.Go(func() {
				<-start
				got, err := s.Claim(ctx, key, rows[i])
				errs[i] = err
				saw[i] = map[uuid.UUID]bool{}
				for _, r := range got {
					saw[i][r.Attempt] = true
				}
			})
		}
		close(start)
		wg.Wait()
		for i := range claimants {
			switch {
			case errs[i] != nil:
				t.Errorf("round %d: Claim %d: %v", round, i, errs[i])
			case !saw[i][rows[i].Attempt]:
				t.Errorf("round %d: Claim %d did not return its own row", round, i)
			}
			for j := range i {
				if errs[i] == nil && errs[j] == nil && !saw[i][rows[j].Attempt] && !saw[j][rows[i].Attempt] {
					t.Errorf("round %d: Claims %d and %d both returned, neither seeing the other's row", round, i, j)
				}
			}
		}
		if t.Failed() {
			return
		}
		// Once they all returned, a later Claim sees every row.
		last := newClaimRow(uuid.New(), claimants)
		sameRows(t, fmt.Sprintf("round %d: Claim after the race", round), mustClaim(t, s, key, last), append(rows, last))
	}
}

// testClaimDrop: Drop deletes the rows it names, by Attempt, and no other
// (of its key or another); rows that are not there are no error.
func testClaimDrop(t *testing.T, s store.EmailClaims, _ func() error) {
	key, other := uuid.New(), uuid.New()
	customer := uuid.New()
	a, b, c := newClaimRow(customer, 1), newClaimRow(uuid.New(), 2), newClaimRow(customer, 3)
	for _, r := range []store.ClaimRow{a, b, c} {
		mustClaim(t, s, key, r)
	}
	// The same attempt under another key is another row.
	elsewhere := a
	mustClaim(t, s, other, elsewhere)

	// Matched by Attempt: the other fields of the rows given need not be
	// the stored ones.
	cLoose := c
	cLoose.Customer, cLoose.Since = uuid.New(), 99
	mustDrop(t, s, key, a, cLoose)
	sameRows(t, "Scan after Drop", scanKey(t, s, key), []store.ClaimRow{b})
	sameRows(t, "Rows after Drop", mustRows(t, s, key), []store.ClaimRow{b})
	d := newClaimRow(uuid.New(), 4)
	sameRows(t, "Claim after Drop", mustClaim(t, s, key, d), []store.ClaimRow{b, d})
	sameRows(t, "the other key after Drop", scanKey(t, s, other), []store.ClaimRow{elsewhere})

	// Rows that are not there: dropped already, never written, under a
	// key never written, or none at all.
	mustDrop(t, s, key, a, newClaimRow(uuid.New(), 5))
	mustDrop(t, s, uuid.New(), newClaimRow(uuid.New(), 6))
	mustDrop(t, s, key)
	sameRows(t, "Scan after Drops of absent rows", scanKey(t, s, key), []store.ClaimRow{b, d})
}

// ClaimDropOutranksRetry checks, on an engine that may retry a write
// behind its caller's back (CQL's driver), that a dropped row written again
// with the same fields, At included (the late retry), stays gone, even
// when its At is ahead of the dropping clock (a claimant whose clock runs
// ahead). SQLite retries nothing: a Claim there is the caller's own write.
func ClaimDropOutranksRetry(t *testing.T, s store.EmailClaims) {
	key := uuid.New()
	now := newClaimRow(uuid.New(), 1)
	ahead := newClaimRow(uuid.New(), 2)
	ahead.At = ahead.At.Add(time.Hour)
	kept := newClaimRow(uuid.New(), 3)
	for _, r := range []store.ClaimRow{now, ahead, kept} {
		mustClaim(t, s, key, r)
	}
	mustDrop(t, s, key, now, ahead)
	for _, r := range []store.ClaimRow{now, ahead} {
		got := mustClaim(t, s, key, r)
		for _, g := range got {
			if g.Attempt == r.Attempt {
				t.Errorf("the retried write of dropped row %s (At %v) brought it back: Claim returned it", r.Attempt, r.At)
			}
		}
	}
	sameRows(t, "Scan after the retries", scanKey(t, s, key), []store.ClaimRow{kept})
}

// testClaimScan: Scan gives every row written before it, once, with its
// key, and no dropped row; it stops at fn's first error.
func testClaimScan(t *testing.T, s store.EmailClaims, _ func() error) {
	const keys, workers = 260, 8 // two rows a key: more than one page of 500
	type keyed struct {
		key uuid.UUID
		row store.ClaimRow
	}
	var (
		mu      sync.Mutex
		want    = map[uuid.UUID]keyed{} // by attempt
		dropped []uuid.UUID
	)
	ctx := testContext(t)
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				key := uuid.New()
				first, second := newClaimRow(uuid.New(), int64(i)), newClaimRow(uuid.New(), int64(i)+1)
				for _, r := range []store.ClaimRow{first, second} {
					if _, err := s.Claim(ctx, key, r); err != nil {
						t.Errorf("Claim(%s): %v", key, err)
					}
				}
				drop := i%10 == 0
				if drop {
					if err := s.Drop(ctx, key, first); err != nil {
						t.Errorf("Drop(%s): %v", key, err)
					}
				}
				mu.Lock()
				if drop {
					dropped = append(dropped, first.Attempt)
				} else {
					want[first.Attempt] = keyed{key, first}
				}
				want[second.Attempt] = keyed{key, second}
				mu.Unlock()
			}
		})
	}
	for i := range keys {
		next <- i
	}
	close(next)
	wg.Wait()
	if t.Failed() {
		return
	}

	got := map[uuid.UUID]keyed{}
	if err := s.Scan(ctx, func(key uuid.UUID, r store.ClaimRow) error {
		if _, dup := got[r.Attempt]; dup {
			t.Errorf("Scan gave row %s twice", r.Attempt)
		}
		got[r.Attempt] = keyed{key, r}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("Scan gave %d rows, want %d", len(got), len(want))
	}
	for attempt, w := range want {
		g, ok := got[attempt]
		switch {
		case !ok:
			t.Errorf("Scan: row %s of key %s missing", attempt, w.key)
		case g.key != w.key:
			t.Errorf("Scan: row %s under key %s, want %s", attempt, g.key, w.key)
		case g.row.Customer != w.row.Customer || g.row.Since != w.row.Since || !g.row.At.Equal(w.row.At) || g.row.At.Location() != time.UTC:
			t.Errorf("Scan: row %s = %s@%d at %v, want %s@%d at %v in UTC", attempt,
				g.row.Customer, g.row.Since, g.row.At, w.row.Customer, w.row.Since, w.row.At)
		}
	}
	for _, attempt := range dropped {
		if _, ok := got[attempt]; ok {
			t.Errorf("Scan gave dropped row %s", attempt)
		}
	}

	stop := errors.New("stop")
	calls := 0
	if err := s.Scan(ctx, func(uuid.UUID, store.ClaimRow) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Errorf("Scan with a failing fn = %v after %d calls, want stop after 1", err, calls)
	}
}

// testClaimClosed: every call after the store's Close returns ErrClosed.
func testClaimClosed(t *testing.T, s store.EmailClaims, closeFn func() error) {
	if closeFn == nil {
		t.Skip("the opener gives no Close")
	}
	key := uuid.New()
	row := newClaimRow(uuid.New(), 1)
	mustClaim(t, s, key, row)
	if err := closeFn(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx := testContext(t)
	checks := map[string]error{
		"Claim": func() error { _, err := s.Claim(ctx, key, newClaimRow(uuid.New(), 2)); return err }(),
		"Rows":  func() error { _, err := s.Rows(ctx, key); return err }(),
		"Drop":  s.Drop(ctx, key, row),
		"Scan":  s.Scan(ctx, func(uuid.UUID, store.ClaimRow) error { return nil }),
	}
	for name, err := range checks {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}
