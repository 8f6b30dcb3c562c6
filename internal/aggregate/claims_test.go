package aggregate

import (
	"context"
	"errors"
	"fmt"
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

// claimHistory returns the types and holders of address's claim stream.
func claimHistory(t *testing.T, st store.Store, address string) string {
	t.Helper()
	addr, err := ParseEmail(address)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := st.Load(context.Background(), EmailClaimID(addr), 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		ev, err := Decode(e)
		if err != nil || e.AggregateType != EmailClaimType {
			t.Fatalf("claim event %s of %s: %v", e.Type, e.AggregateType, err)
		}
		switch ev := ev.(type) {
		case EmailClaimed:
			out = append(out, "claimed by "+short(ev.CustomerID))
		case EmailReleased:
			out = append(out, "released by "+short(ev.CustomerID))
		}
	}
	return strings.Join(out, ", ")
}

func short(id uuid.UUID) string { return id.String()[len(id.String())-1:] }

// TestHandlerEmailUnique: an address another customer holds is refused on
// registration and on change, in any case; a change leaves the old
// address to others (its claim is stale: no release is written); a change
// of case only claims nothing.
func TestHandlerEmailUnique(t *testing.T) {
	st := openStore(t)
	h := NewHandler(st, time.Now)
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
	if got, want := claimHistory(t, st, "ann@example.com"), "claimed by 2, claimed by 3"; got != want {
		t.Errorf("claims of ann@example.com: %s, want %s", got, want)
	}
	if got, want := claimHistory(t, st, "bob@example.com"), "claimed by 3"; got != want {
		t.Errorf("claims of bob@example.com: %s, want %s", got, want)
	}

	// A's own address in another case: no claim, no release.
	if err := changeEmailOf(h, a, "ANN@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := changeEmailOf(h, b, "ann@example.org"); !isTaken(err) {
		t.Fatalf("change to an address held in another case: %v, want email_taken", err)
	}
	if got, want := claimHistory(t, st, "ann@example.org"), "claimed by 2"; got != want {
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
	st := openStore(t)
	clk := newClock()
	h := NewHandler(st, clk.now)
	crashed, other, late := uuid.New(), uuid.New(), uuid.New()

	// The crash: the claim is written, the registration is not.
	if err := h.claim(ctx, "carl@example.com", crashed, 0, cmd(), clk.now()); err != nil {
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
	if err := h.claim(ctx, "dora@example.com", late, 0, cmd(), clk.now()); err != nil {
		t.Fatal(err)
	}
	if err := registerAs(h, late, "dora@example.com"); err != nil {
		t.Fatalf("retried registration of the claim's own customer: %v", err)
	}

	// A registration refused as existing claims nothing.
	if err := registerAs(h, other, "eve@example.com"); !errors.Is(err, ErrExists) {
		t.Fatalf("register an existing id: %v", err)
	}
	if got := claimHistory(t, st, "eve@example.com"); got != "" {
		t.Errorf("claims of eve@example.com: %s, want none", got)
	}

	// A change that claimed, then lost its append to another command of
	// its customer (and was not retried), leaves a claim its customer
	// moved past: stale at once.
	if err := h.claim(ctx, "fay@example.com", other, 1, cmd(), clk.now()); err != nil {
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
	st := openStore(t)
	handlers := []*Handler{NewHandler(st, time.Now), NewHandler(st, time.Now)}
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
	if got := claimHistory(t, st, "race@example.com"); got != "claimed by "+short(id) {
		t.Errorf("claims: %s, want the winner's only", got)
	}
}

// TestHandlerChangeEmailRace: customers racing to change to one address,
// and one registering it: one ends with it.
func TestHandlerChangeEmailRace(t *testing.T) {
	st := openStore(t)
	handlers := []*Handler{NewHandler(st, time.Now), NewHandler(st, time.Now)}
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
