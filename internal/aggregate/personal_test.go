package aggregate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/pii"
	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/store"
)

// personalFixture is a handler with encryption on, on real SQLite files of
// one directory: events.db, snapshots.db (a snapshot after every event)
// and datakeys.db.
type personalFixture struct {
	dir   string
	st    *sqlite.Store
	snaps *sqlite.Snapshots
	keys  *sqlite.DataKeys
	kek   pii.KEK
	ring  *pii.Keyring
	hash  *pii.Hasher // the claims' keyed hash
	h     *aggregate.Handler
}

func newPersonalFixture(t *testing.T) *personalFixture {
	t.Helper()
	f := &personalFixture{dir: t.TempDir()}
	var err error
	if f.st, err = sqlite.OpenStore(filepath.Join(f.dir, "events.db"), sqlite.Options{Upcaster: aggregate.Upcasters()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.st.Close() })
	if f.snaps, err = sqlite.OpenSnapshots(t.Context(), filepath.Join(f.dir, "snapshots.db")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.snaps.Close() })
	if f.keys, err = sqlite.OpenDataKeys(t.Context(), filepath.Join(f.dir, "datakeys.db")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.keys.Close() })
	if f.kek, err = pii.NewLocalKEK(bytes.Repeat([]byte{3}, pii.KEKSize)); err != nil {
		t.Fatal(err)
	}
	f.ring = pii.NewKeyring(f.keys, f.kek, pii.Options{})
	if f.hash, err = f.ring.ClaimSecret(t.Context()); err != nil {
		t.Fatal(err)
	}
	f.h = aggregate.NewHandler(f.st, time.Now, aggregate.WithSnapshots(f.snaps, 1),
		aggregate.WithPersonalData(f.ring, f.hash.ID), aggregate.WithEmailClaims(f.st.EmailClaims()))
	return f
}

// holds reports whether a file of the fixture's directory holds s.
func (f *personalFixture) holds(t *testing.T, s string) string {
	t.Helper()
	entries, err := os.ReadDir(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(f.dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(s)) {
			return e.Name()
		}
	}
	return ""
}

func meta() aggregate.Meta {
	return aggregate.Meta{CommandID: uuid.New(), CorrelationID: uuid.New(), Expected: aggregate.AnyVersion}
}

// TestPersonalDataEncryptedAndErased: personal fields are stored only as
// ciphertext (events, snapshots, WAL included), read back in plaintext,
// and read as erased once the customer is erased, when the address can be
// registered again and orders keep working.
func TestPersonalDataEncryptedAndErased(t *testing.T) {
	ctx := t.Context()
	f := newPersonalFixture(t)
	const (
		email, email2 = "ada.lovelace@example.com", "countess.ada@example.org"
		first, last   = "Augusta", "Lovelacewxyz"
		phone, phone2 = "+441234567890", "+449876543210"
		signature     = "A. King-Noel signature"
	)
	c := uuid.New()
	if _, err := f.h.RegisterCustomer(ctx, c, meta(), email, first, last, phone); err != nil {
		t.Fatal(err)
	}
	if _, err := f.h.Customer(ctx, c, meta(), func(cu *aggregate.Customer, now time.Time) ([]aggregate.Event, error) {
		return cu.ChangeEmail(email2, now)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.h.Customer(ctx, c, meta(), func(cu *aggregate.Customer, now time.Time) ([]aggregate.Event, error) {
		return cu.ChangePhone(phone2, now)
	}); err != nil {
		t.Fatal(err)
	}
	o := uuid.New()
	if _, err := f.h.CreateOrder(ctx, o, meta(), c, []aggregate.Item{{ProductID: uuid.New(), Quantity: 1}}); err != nil {
		t.Fatal(err)
	}
	for _, step := range []func(*aggregate.Order, time.Time) ([]aggregate.Event, error){
		func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) { return o.Confirm(now) },
		func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) {
			return o.Ship("TRACK1", "DHL", now)
		},
		func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) { return o.Deliver(signature, now) },
	} {
		if _, err := f.h.Order(ctx, o, meta(), step); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond) // the background snapshot saves

	// Reads decrypt.
	cu, _, err := f.h.CustomerAt(ctx, c, 100)
	if err != nil {
		t.Fatal(err)
	}
	if cu.Email != email2 || cu.FirstName != first || cu.LastName != last || cu.Phone != phone2 || cu.Erased {
		t.Fatalf("customer = %+v", cu)
	}
	or, _, err := f.h.OrderAt(ctx, o, 100)
	if err != nil {
		t.Fatal(err)
	}
	if or.Signature != signature {
		t.Fatalf("signature = %q", or.Signature)
	}
	// The stored events carry ciphertext and name their subject.
	raw, err := f.st.Load(ctx, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	if raw[0].Metadata[aggregate.MetaSubject] != c.String() || !bytes.Contains(raw[0].Data, []byte(`"email":"pii1:`)) {
		t.Errorf("stored CustomerRegistered: %s %v", raw[0].Data, raw[0].Metadata)
	}
	rawOrder, err := f.st.Load(ctx, o, 0)
	if err != nil {
		t.Fatal(err)
	}
	if last := rawOrder[len(rawOrder)-1]; last.Metadata[aggregate.MetaSubject] != c.String() {
		t.Errorf("OrderDelivered's subject = %q, want its customer %s", last.Metadata[aggregate.MetaSubject], c)
	}
	// The claim stream's id is no UUIDv5 of the address.
	addr, _ := aggregate.ParseEmail(email2)
	if _, v, err := f.st.Version(ctx, aggregate.EmailClaimID(addr)); err != nil || v != 0 {
		t.Errorf("the UUIDv5 claim stream of the address has version %d (%v): claims still reveal addresses", v, err)
	}
	for _, s := range []string{email, email2, first, last, phone, phone2, signature} {
		if name := f.holds(t, s); name != "" {
			t.Errorf("%s holds %q in plaintext", name, s)
		}
	}

	// Erase.
	claimsOf := func() (n int) {
		if err := f.st.EmailClaims().Scan(ctx, func(_ uuid.UUID, r store.ClaimRow) error {
			if r.Customer == c {
				n++
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := claimsOf(); n == 0 {
		t.Fatal("the customer has no claim row before its erasure")
	}
	if _, err := f.h.EraseCustomer(ctx, c, meta()); err != nil {
		t.Fatal(err)
	}
	if n := claimsOf(); n != 0 {
		t.Errorf("%d claim rows still name the erased customer", n)
	}
	if _, err := f.h.EraseCustomer(ctx, c, meta()); err != nil {
		t.Fatalf("a second erasure: %v", err)
	}
	fresh := aggregate.NewHandler(f.st, time.Now, aggregate.WithPersonalData(f.ring, nil), aggregate.WithEmailClaims(f.st.EmailClaims())) // no snapshots: a full replay
	for name, h := range map[string]*aggregate.Handler{"snapshots": f.h, "replay": fresh} {
		for _, at := range []int64{1, 100} { // time travel before the erasure, and now
			cu, _, err := h.CustomerAt(ctx, c, at)
			if err != nil {
				t.Fatal(err)
			}
			if cu.Email != pii.Erased || cu.FirstName != pii.Erased || cu.LastName != pii.Erased || cu.Phone != pii.Erased {
				t.Errorf("%s: customer at %d after the erasure = %+v", name, at, cu)
			}
		}
		or, _, err := h.OrderAt(ctx, o, 100)
		if err != nil {
			t.Fatal(err)
		}
		if or.Signature != pii.Erased || or.Status != aggregate.Delivered {
			t.Errorf("%s: order after the erasure = %+v", name, or)
		}
	}
	cu, _, _ = f.h.CustomerAt(ctx, c, 100)
	if !cu.Erased {
		t.Error("the customer is not marked erased")
	}
	_, err = f.h.Customer(ctx, c, meta(), func(cu *aggregate.Customer, now time.Time) ([]aggregate.Event, error) {
		return cu.ChangeEmail("back@example.com", now)
	})
	var aerr *aggregate.Error
	if !errors.As(err, &aerr) || aerr.Code != "customer_erased" {
		t.Errorf("change of an erased customer's e-mail = %v, want customer_erased", err)
	}
	// The address is free again, and orders work.
	if _, err := f.h.RegisterCustomer(ctx, uuid.New(), meta(), email2, "New", "Person", ""); err != nil {
		t.Errorf("registering the erased customer's address again: %v", err)
	}
	if _, err := f.h.CreateOrder(ctx, uuid.New(), meta(), c, []aggregate.Item{{ProductID: uuid.New(), Quantity: 2}}); err != nil {
		t.Errorf("an order for the erased customer: %v", err)
	}
	for _, s := range []string{email, email2, first, last, phone, phone2, signature} {
		if name := f.holds(t, s); name != "" {
			t.Errorf("after the erasure, %s holds %q in plaintext", name, s)
		}
	}
}

// BenchmarkSealOpen is the CPU cost of the personal data of one
// registration: sealing a CustomerRegistered's four fields with a cached
// key (the append), and opening them again (a load).
func BenchmarkSealOpen(b *testing.B) {
	keys, err := sqlite.OpenDataKeys(b.Context(), filepath.Join(b.TempDir(), "datakeys.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer keys.Close()
	kek, _ := pii.NewLocalKEK(bytes.Repeat([]byte{3}, pii.KEKSize))
	ring := pii.NewKeyring(keys, kek, pii.Options{})
	subject := uuid.New()
	data, _ := json.Marshal(aggregate.CustomerRegistered{Email: "ada.lovelace@example.com", FirstName: "Ada", LastName: "Lovelace",
		Phone: "+441234567890", RegisteredAt: time.Now()})
	e := store.Event{ID: uuid.New(), AggregateID: subject, AggregateType: aggregate.CustomerType, Type: "CustomerRegistered", Data: data}
	if _, err := ring.For(b.Context(), subject); err != nil {
		b.Fatal(err)
	}
	b.Run("seal", func(b *testing.B) {
		for b.Loop() {
			if _, err := aggregate.SealEvent(b.Context(), ring, subject, e); err != nil {
				b.Fatal(err)
			}
		}
	})
	sealed, _ := aggregate.SealEvent(b.Context(), ring, subject, e)
	b.Run("open", func(b *testing.B) {
		for b.Loop() {
			if _, err := aggregate.OpenEvent(b.Context(), ring, sealed); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestLegacyClaims: an address claimed by a build before claim rows (a
// claim stream, under a keyed hash or, before that, a UUIDv5 of the
// address; not migrated) stays its customer's after the upgrade, and is
// free once that customer moves to another address.
func TestLegacyClaims(t *testing.T) {
	ctx := t.Context()
	f := newPersonalFixture(t)
	// The customers as the builds before left them: their events, and no
	// claim row of this build (these rows go elsewhere).
	before := aggregate.NewHandler(f.st, time.Now, aggregate.WithEmailClaims(aggregate.OpenSQLiteClaims(t)))
	old, hashed := uuid.New(), uuid.New()
	for id, email := range map[uuid.UUID]string{old: "old.timer@example.com", hashed: "hashed@example.com"} {
		if _, err := before.RegisterCustomer(ctx, id, meta(), email, "Old", "Timer", ""); err != nil {
			t.Fatal(err)
		}
	}
	oldAddr, _ := aggregate.ParseEmail("old.timer@example.com")
	aggregate.AppendClaimStream(t, f.st, aggregate.EmailClaimID(oldAddr), oldAddr.Key(), old)
	aggregate.AppendClaimStream(t, f.st, f.hash.ID("hashed@example.com"), "hashed@example.com", hashed)

	for _, email := range []string{"Old.Timer@example.com", "HASHED@example.com"} {
		var aerr *aggregate.Error
		_, err := f.h.RegisterCustomer(ctx, uuid.New(), meta(), email, "New", "Comer", "")
		if !errors.As(err, &aerr) || aerr.Code != "email_taken" {
			t.Fatalf("registering %s, held by a legacy claim: %v, want email_taken", email, err)
		}
	}
	if _, err := f.h.Customer(ctx, old, meta(), func(c *aggregate.Customer, now time.Time) ([]aggregate.Event, error) {
		return c.ChangeEmail("moved.on@example.com", now)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.h.RegisterCustomer(ctx, uuid.New(), meta(), "old.timer@example.com", "New", "Comer", ""); err != nil {
		t.Errorf("the legacy holder moved on, yet its old address is refused: %v", err)
	}
}

// countingKeys counts the creations a keyring asks of its store.
type countingKeys struct {
	pii.Keys
	creates, mints int
}

func (c *countingKeys) Create(ctx context.Context, k store.WrappedKey) (store.WrappedKey, error) {
	c.creates++
	return c.Keys.Create(ctx, k)
}

func (c *countingKeys) Mint(ctx context.Context, k store.WrappedKey) error {
	c.mints++
	return c.Keys.Mint(ctx, k)
}

// TestMintedRegistration: a registration under an id the server minted
// (Meta.Minted) mints its customer's key instead of creating it (on CQL a
// plain write instead of a Paxos round), once, and the key is in the
// store: a keyring that never cached it reads the customer. Any other
// registration creates the key as before.
func TestMintedRegistration(t *testing.T) {
	ctx := t.Context()
	f := newPersonalFixture(t)
	counted := &countingKeys{Keys: f.keys}
	ring := pii.NewKeyring(counted, f.kek, pii.Options{})
	hasher, err := ring.ClaimSecret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h := aggregate.NewHandler(f.st, time.Now, aggregate.WithPersonalData(ring, hasher.ID), aggregate.WithEmailClaims(f.st.EmailClaims()))
	counted.creates = 0

	minted := meta()
	minted.Minted = true
	c := uuid.New()
	if _, err := h.RegisterCustomer(ctx, c, minted, "minted@example.com", "Ann", "Lee", "+15550123"); err != nil {
		t.Fatal(err)
	}
	if counted.mints != 1 || counted.creates != 0 {
		t.Fatalf("minted registration: %d mints, %d creates; want 1, 0", counted.mints, counted.creates)
	}
	// Stored through the store's Mint, and sealed there as an append is.
	raw, err := f.st.Load(ctx, c, 0)
	if err != nil || len(raw) != 1 {
		t.Fatalf("the stored registration: %d events, %v", len(raw), err)
	}
	if d := string(raw[0].Data); strings.Contains(d, "minted@example.com") || strings.Contains(d, "Ann") || !strings.Contains(d, "pii1:") {
		t.Fatalf("the stored registration is not sealed: %s", d)
	}
	// Another keyring on the same store, with nothing cached.
	cold := aggregate.NewHandler(f.st, time.Now, aggregate.WithPersonalData(pii.NewKeyring(f.keys, f.kek, pii.Options{}), hasher.ID))
	cu, _, err := cold.CustomerAt(ctx, c, 100)
	if err != nil {
		t.Fatal(err)
	}
	if cu.Email != "minted@example.com" || cu.FirstName != "Ann" {
		t.Fatalf("minted customer read by a cold keyring: %+v", cu)
	}

	// Refused for a taken address: the key it minted seals nothing.
	_, err = h.RegisterCustomer(ctx, uuid.New(), minted, "minted@example.com", "Bo", "Lee", "+15550124")
	var e *aggregate.Error
	if !errors.As(err, &e) || e.Code != "email_taken" {
		t.Fatalf("minted registration of a taken address: %v, want email_taken", err)
	}

	counted.mints, counted.creates = 0, 0
	if _, err := h.RegisterCustomer(ctx, uuid.New(), meta(), "client-id@example.com", "Cy", "Lee", "+15550125"); err != nil {
		t.Fatal(err)
	}
	if counted.mints != 0 || counted.creates != 1 {
		t.Fatalf("registration under a client's id: %d mints, %d creates; want 0, 1", counted.mints, counted.creates)
	}
}
