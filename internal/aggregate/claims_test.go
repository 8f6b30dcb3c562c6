package aggregate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// clock is a settable time for handlers.
type clock struct{ ns atomic.Int64 }

func newClock() *clock               { c := &clock{}; c.set(t0); return c }
func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *clock) add(d time.Duration) { c.set(c.now().Add(d)) }

func cmd() Meta { return Meta{CommandID: uuid.New(), CorrelationID: uuid.New(), Expected: AnyVersion} }

func registerAs(h *Handler, id uuid.UUID, email string) error {
	_, err := h.RegisterCustomer(context.Background(), id, cmd(), email, "Ann", "Lee", "")
	return err
}

func changeEmailOf(h *Handler, id uuid.UUID, email string) error {
	_, err := h.Customer(context.Background(), id, cmd(), func(c *Customer, now time.Time) ([]Event, error) {
		return c.ChangeEmail(email, now)
	})
	return err
}

func isTaken(err error) bool {
	var e *Error
	return errors.As(err, &e) && errors.Is(err, ErrRejected) && e.Code == "email_taken" && e.Field == "/email"
}

// claimRows returns the customers whose claim rows are under address's
// key, in the order of their claims.
func claimRows(t *testing.T, claims store.EmailClaims, address string) string {
	t.Helper()
	addr, err := ParseEmail(address)
	if err != nil {
		t.Fatal(err)
	}
	key := EmailClaimID(addr)
	var rows []store.ClaimRow
	if err := claims.Scan(context.Background(), func(k uuid.UUID, r store.ClaimRow) error {
		if k == key {
			rows = append(rows, r)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(rows, func(a, b store.ClaimRow) int { return strings.Compare(a.Attempt.String(), b.Attempt.String()) })
	var out []string
	for _, r := range rows {
		out = append(out, "claimed by "+short(r.Customer))
	}
	return strings.Join(out, ", ")
}

func short(id uuid.UUID) string { return id.String()[len(id.String())-1:] }

// TestHandlerEmailUnique: an address another customer holds is refused on
// registration and on change, in any case; a change leaves the old
// address to others (its claim is stale: no release is written); a change
// of case only claims nothing.
func TestHandlerEmailUnique(t *testing.T) {
	st, claims := openStore(t), OpenSQLiteClaims(t)
	h := NewHandler(st, time.Now, WithEmailClaims(claims))
	a, b := customerID, otherID // …2 and …3

	if err := registerAs(h, a, "Ann@Example.com"); err != nil {
		t.Fatal(err)
	}
	if err := registerAs(h, b, "ann@example.COM"); !isTaken(err) {
		t.Fatalf("register a held address in another case: %v, want email_taken", err)
	}
	if evs, _ := st.Load(context.Background(), b, 0); len(evs) != 0 {
		t.Fatalf("the refused customer has %d events", len(evs))
	}
	if err := registerAs(h, b, "bob@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := changeEmailOf(h, b, "ANN@example.com"); !isTaken(err) {
		t.Fatalf("change to a held address: %v, want email_taken", err)
	}
	if err := registerAs(h, a, "bob@example.com"); !errors.Is(err, ErrExists) {
		t.Fatalf("register an existing id with a held address: %v, want customer_exists first", err)
	}
	if err := registerAs(h, a, "ann@example.com"); !errors.Is(err, ErrExists) {
		t.Fatalf("register again: %v, want customer_exists", err)
	}

	if err := changeEmailOf(h, a, "ann@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := changeEmailOf(h, b, "ann@example.com"); err != nil {
		t.Fatalf("take an address its customer left: %v", err)
	}
	if got, want := claimRows(t, claims, "ann@example.com"), "claimed by 3"; got != want {
		t.Errorf("claims of ann@example.com: %s, want %s", got, want)
	}
	if got, want := claimRows(t, claims, "bob@example.com"), "claimed by 3"; got != want {
		t.Errorf("claims of bob@example.com: %s, want %s", got, want)
	}

	// A's own address in another case: no claim, no release.
	if err := changeEmailOf(h, a, "ANN@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := changeEmailOf(h, b, "ann@example.org"); !isTaken(err) {
		t.Fatalf("change to an address held in another case: %v, want email_taken", err)
	}
	if got, want := claimRows(t, claims, "ann@example.org"), "claimed by 2"; got != want {
		t.Errorf("claims of ann@example.org: %s, want %s", got, want)
	}
	c, _, err := load[Customer](context.Background(), st, CustomerType, a)
	if err != nil || c.Email != "ANN@example.org" {
		t.Errorf("customer a: %+v, %v", c, err)
	}
}

// TestHandlerStaleClaims: a claim whose customer never wrote (a crash
// between the claim and the registration) is held for the claim TTL, but
// not against its own customer; a claim whose customer moved past it is
// taken over at once.
func TestHandlerStaleClaims(t *testing.T) {
	ctx := context.Background()
	st, claims := openStore(t), OpenSQLiteClaims(t)
	clk := newClock()
	h := NewHandler(st, clk.now, WithEmailClaims(claims))
	crashed, other, late := uuid.New(), uuid.New(), uuid.New()

	// The crash: the claim is written, the registration is not.
	if err := h.claim(ctx, "carl@example.com", crashed, 0, clk.now()); err != nil {
		t.Fatal(err)
	}
	clk.add(h.claimTTL - time.Second)
	if err := registerAs(h, other, "Carl@example.com"); !isTaken(err) {
		t.Fatalf("register while another registration is pending: %v, want email_taken", err)
	}
	clk.add(time.Second)
	if err := registerAs(h, other, "Carl@example.com"); err != nil {
		t.Fatalf("register once the pending claim is stale: %v", err)
	}
	clk.add(time.Hour)
	if err := registerAs(h, crashed, "carl@example.com"); !isTaken(err) {
		t.Fatalf("the crashed registration retried after the takeover: %v, want email_taken", err)
	}

	// The same customer takes its own pending claim at once.
	if err := h.claim(ctx, "dora@example.com", late, 0, clk.now()); err != nil {
		t.Fatal(err)
	}
	if err := registerAs(h, late, "dora@example.com"); err != nil {
		t.Fatalf("retried registration of the claim's own customer: %v", err)
	}

	// A registration refused as existing claims nothing.
	if err := registerAs(h, other, "eve@example.com"); !errors.Is(err, ErrExists) {
		t.Fatalf("register an existing id: %v", err)
	}
	if got := claimRows(t, claims, "eve@example.com"); got != "" {
		t.Errorf("claims of eve@example.com: %s, want none", got)
	}

	// A change that claimed, then lost its append to another command of
	// its customer (and was not retried), leaves a claim its customer
	// moved past: stale at once.
	if err := h.claim(ctx, "fay@example.com", other, 1, clk.now()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Customer(ctx, other, cmd(), func(c *Customer, now time.Time) ([]Event, error) {
		return c.ChangePhone("+14155552671", now)
	}); err != nil {
		t.Fatal(err)
	}
	if err := changeEmailOf(h, late, "fay@example.com"); err != nil {
		t.Fatalf("take a claim its customer moved past: %v", err)
	}
}

// TestHandlerEmailRace: registrations of one address race on two handlers
// (two processes) over one store: exactly one wins, the others are
// refused as email_taken, none is retried into a second winner.
func TestHandlerEmailRace(t *testing.T) {
	st, claims := openStore(t), OpenSQLiteClaims(t)
	handlers := []*Handler{NewHandler(st, time.Now, WithEmailClaims(claims)), NewHandler(st, time.Now, WithEmailClaims(claims))}
	var wg sync.WaitGroup
	var won, taken atomic.Int32
	var winner atomic.Value
	for i := range 32 {
		wg.Go(func() {
			id := uuid.New()
			email := "race@example.com"
			if i%2 == 1 {
				email = "RACE@example.com"
			}
			switch err := registerAs(handlers[i%2], id, email); {
			case err == nil:
				won.Add(1)
				winner.Store(id)
			case isTaken(err):
				taken.Add(1)
			default:
				t.Errorf("register %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if won.Load() != 1 || taken.Load() != 31 {
		t.Fatalf("%d won, %d refused as taken; want 1 and 31", won.Load(), taken.Load())
	}
	id := winner.Load().(uuid.UUID)
	if got := claimRows(t, claims, "race@example.com"); got != "claimed by "+short(id) {
		t.Errorf("claims: %s, want the winner's only", got)
	}
}

// TestHandlerChangeEmailRace: customers racing to change to one address,
// and one registering it: one ends with it.
func TestHandlerChangeEmailRace(t *testing.T) {
	st, claims := openStore(t), OpenSQLiteClaims(t)
	handlers := []*Handler{NewHandler(st, time.Now, WithEmailClaims(claims)), NewHandler(st, time.Now, WithEmailClaims(claims))}
	ids := make([]uuid.UUID, 16)
	for i := range ids {
		ids[i] = uuid.New()
		if err := registerAs(handlers[0], ids[i], fmt.Sprintf("c%d@example.com", i)); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var won atomic.Int32
	for i, id := range ids {
		wg.Go(func() {
			err := changeEmailOf(handlers[i%2], id, "Prize@example.com")
			if err == nil {
				won.Add(1)
			} else if !isTaken(err) {
				t.Errorf("change %d: %v", i, err)
			}
		})
	}
	wg.Go(func() {
		if err := registerAs(handlers[1], uuid.New(), "prize@example.com"); err == nil {
			won.Add(1)
		} else if !isTaken(err) {
			t.Errorf("register: %v", err)
		}
	})
	wg.Wait()
	holders := 0
	for _, id := range ids {
		c, _, err := load[Customer](context.Background(), st, CustomerType, id)
		if err != nil {
			t.Fatal(err)
		}
		if emailKey(c.Email) == "prize@example.com" {
			holders++
		}
	}
	if won.Load() != 1 || holders > 1 {
		t.Fatalf("%d commands won, %d of the changing customers hold the address; want one winner", won.Load(), holders)
	}
}

// failingClaims writes each claim, then fails it: a write whose answer was
// lost (a timeout after the replicas took it).
type failingClaims struct{ store.EmailClaims }

func (f failingClaims) Claim(ctx context.Context, key uuid.UUID, row store.ClaimRow) ([]store.ClaimRow, error) {
	if _, err := f.EmailClaims.Claim(ctx, key, row); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("claim timed out: %w", store.ErrUnavailable)
}

// TestHandlerClaimFails: a claim whose write may have landed fails its
// command as unavailable (never email_taken, nothing appended), and leaves
// no row that would hold the address for the claim TTL.
func TestHandlerClaimFails(t *testing.T) {
	st, claims := openStore(t), OpenSQLiteClaims(t)
	failing := NewHandler(st, time.Now, WithEmailClaims(failingClaims{claims}))
	h := NewHandler(st, time.Now, WithEmailClaims(claims))
	a, b := uuid.New(), uuid.New()
	if err := registerAs(failing, a, "gil@example.com"); !errors.Is(err, store.ErrUnavailable) || isTaken(err) {
		t.Fatalf("register with a failed claim: %v, want unavailable", err)
	}
	if evs, _ := st.Load(context.Background(), a, 0); len(evs) != 0 {
		t.Fatalf("the failed registration appended %d events", len(evs))
	}
	if got := claimRows(t, claims, "gil@example.com"); got != "" {
		t.Fatalf("the failed claim left rows: %s", got)
	}
	if err := registerAs(h, b, "gil@example.com"); err != nil {
		t.Fatalf("register the address after another's failed claim: %v", err)
	}
}

// TestHandlerClaimWaitsForClaimsInFlight: a claim that meets another
// customer's pending row waits for it to settle, whichever came first:
// behind an earlier claim it yields its row and is refused once that
// claim's customer has the address; ahead of a later one (which yields to
// it) it goes on once that row is gone. A row that never settles refuses
// after claimWait.
func TestHandlerClaimWaitsForClaimsInFlight(t *testing.T) {
	ctx := context.Background()
	st, claims := openStore(t), OpenSQLiteClaims(t)
	h := NewHandler(st, time.Now, WithEmailClaims(claims))
	h.claimWait = time.Minute // settling, not the bound, ends these waits
	key := func(address string) uuid.UUID {
		addr, err := ParseEmail(address)
		if err != nil {
			t.Fatal(err)
		}
		return EmailClaimID(addr)
	}
	// plant writes the row of another customer's claim in flight.
	plant := func(address string, attempt uuid.UUID) store.ClaimRow {
		r := store.ClaimRow{Attempt: attempt, Customer: uuid.New(), At: time.Now().UTC().Truncate(time.Millisecond)}
		if _, err := claims.Claim(ctx, key(address), r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	register := func(id uuid.UUID, address string) <-chan error {
		done := make(chan error, 1)
		go func() { done <- registerAs(h, id, address) }()
		return done
	}
	notYet := func(done <-chan error, what string) {
		t.Helper()
		select {
		case err := <-done:
			t.Fatalf("%s ended before the claim in flight settled: %v", what, err)
		case <-time.After(100 * time.Millisecond):
		}
	}

	// Behind an earlier claim: refused once its customer holds the address.
	first := plant("ida@example.com", uuid.MustParse("00000000-0000-7000-8000-000000000001"))
	done := register(uuid.New(), "ida@example.com")
	notYet(done, "a claim behind an earlier one")
	if err := registerAs(h, first.Customer, "ida@example.com"); err != nil {
		t.Fatalf("the earlier claimant's registration: %v", err)
	}
	if err := <-done; !isTaken(err) {
		t.Fatalf("the later claim, once the earlier one's customer has the address: %v, want email_taken", err)
	}
	// The holder's planted row and its registration's; none of the loser's.
	if got, want := claimRows(t, claims, "ida@example.com"), "claimed by "+short(first.Customer); got != want+", "+want {
		t.Errorf("rows of ida@example.com: %s, want the holder's two only", got)
	}

	// Ahead of a later claim: goes on once the later one yields.
	later := plant("jo@example.com", uuid.Max)
	jo := uuid.New()
	done = register(jo, "jo@example.com")
	notYet(done, "a claim ahead of a later one")
	if err := claims.Drop(ctx, key("jo@example.com"), later); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the earlier claim, once the later one yielded: %v", err)
	}

	// A claim in flight that never settles: refused after claimWait.
	h.claimWait = 200 * time.Millisecond
	plant("kim@example.com", uuid.Max)
	if err := registerAs(h, uuid.New(), "kim@example.com"); !isTaken(err) {
		t.Fatalf("register beside a claim that never settles: %v, want email_taken", err)
	}
	if got := claimRows(t, claims, "kim@example.com"); strings.Count(got, "claimed") != 1 {
		t.Errorf("rows of kim@example.com: %s, want the one in flight only", got)
	}
}
