package pii_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/cql"
	"github.com/orderd/orderd/internal/pii"
	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/cqltest"
)

func openKeys(t *testing.T) *sqlite.DataKeys {
	t.Helper()
	d, err := sqlite.OpenDataKeys(t.Context(), filepath.Join(t.TempDir(), "datakeys.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func newKEK(t *testing.T, b byte) *pii.LocalKEK {
	t.Helper()
	k, err := pii.NewLocalKEK(bytes.Repeat([]byte{b}, pii.KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpen(t *testing.T) {
	subject := uuid.New()
	k, err := pii.NewDataKey(subject, bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	c := k.Seal(pii.FieldEmail, "ada@example.com")
	if !pii.IsSealed(c) || bytes.Contains([]byte(c), []byte("ada")) {
		t.Fatalf("Seal = %q: not a ciphertext", c)
	}
	if c2 := k.Seal(pii.FieldEmail, "ada@example.com"); c2 == c {
		t.Error("two seals of one value are equal: the nonce is not random")
	}
	if got, err := k.Open(pii.FieldEmail, c); err != nil || got != "ada@example.com" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	// The additional data binds the ciphertext to its field and subject.
	if _, err := k.Open(pii.FieldFirstName, c); !errors.Is(err, pii.ErrDecrypt) {
		t.Errorf("Open as another field = %v, want ErrDecrypt", err)
	}
	other, _ := pii.NewDataKey(uuid.New(), bytes.Repeat([]byte{7}, 32))
	if _, err := other.Open(pii.FieldEmail, c); !errors.Is(err, pii.ErrDecrypt) {
		t.Errorf("Open as another subject = %v, want ErrDecrypt", err)
	}
	tampered := []byte(c)
	tampered[len(tampered)-2] ^= 1
	if _, err := k.Open(pii.FieldEmail, string(tampered)); err == nil {
		t.Error("a tampered ciphertext opened")
	}
	// Plaintext (written before encryption, or in plaintext mode) passes.
	if got, err := k.Open(pii.FieldEmail, "plain@example.com"); err != nil || got != "plain@example.com" {
		t.Errorf("Open(plaintext) = %q, %v", got, err)
	}
	if k.Seal(pii.FieldPhone, "") != "" {
		t.Error("an empty value is sealed")
	}
}

func TestKEKText(t *testing.T) {
	raw := bytes.Repeat([]byte{0xab}, 32)
	a, err := pii.ParseKEK(hex.EncodeToString(raw) + "\n")
	if err != nil {
		t.Fatal(err)
	}
	b, err := pii.ParseKEK("q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=")
	if err != nil {
		t.Fatal(err)
	}
	if a.ID() != b.ID() {
		t.Errorf("hex and base64 of one key give ids %s and %s", a.ID(), b.ID())
	}
	if _, err := pii.ParseKEK("c2hvcnQ="); err == nil {
		t.Error("a short key was accepted")
	}
	if bytes.Contains([]byte(a.ID()), []byte("abab")) {
		t.Errorf("the id %s shows the key", a.ID())
	}
}

func TestEnsureKEKFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "kek")
	k1, created, err := pii.EnsureKEKFile(path)
	if err != nil || !created {
		t.Fatalf("first EnsureKEKFile = %v, created %v", err, created)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("KEK file mode %v, want 0600", fi.Mode().Perm())
	}
	k2, created, err := pii.EnsureKEKFile(path)
	if err != nil || created {
		t.Fatalf("second EnsureKEKFile = %v, created %v", err, created)
	}
	if k1.ID() != k2.ID() {
		t.Errorf("the KEK read back is another: %s, %s", k1.ID(), k2.ID())
	}
}

func TestKeyring(t *testing.T) {
	ctx := t.Context()
	keys := openKeys(t)
	kek := newKEK(t, 1)
	r := pii.NewKeyring(keys, kek, pii.Options{})
	subject := uuid.New()
	if _, err := r.Existing(ctx, subject); !errors.Is(err, store.ErrKeyNotFound) {
		t.Fatalf("Existing before For = %v, want ErrKeyNotFound", err)
	}
	k, err := r.For(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	c := k.Seal(pii.FieldLastName, "Lovelace")
	// Another instance (keyring) on the same store gets the same key.
	r2 := pii.NewKeyring(keys, kek, pii.Options{})
	k2, err := r2.Existing(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := k2.Open(pii.FieldLastName, c); err != nil || got != "Lovelace" {
		t.Fatalf("the other keyring opens %q, %v", got, err)
	}
	// The store holds the key wrapped, never raw.
	wk, err := keys.Get(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(wk.Wrapped, k.Raw()) || wk.KEK != kek.ID() {
		t.Errorf("stored key %x under %s: raw or not under the KEK %s", wk.Wrapped, wk.KEK, kek.ID())
	}
	// A keyring with another KEK cannot unwrap it.
	if _, err := pii.NewKeyring(keys, newKEK(t, 9), pii.Options{}).Existing(ctx, subject); err == nil {
		t.Error("a keyring with another KEK unwrapped the key")
	}
	if err := r.Erase(ctx, subject, time.Now()); err != nil {
		t.Fatal(err)
	}
	for name, rr := range map[string]*pii.Keyring{"eraser": r, "fresh": pii.NewKeyring(keys, kek, pii.Options{})} {
		if _, err := rr.For(ctx, subject); !errors.Is(err, pii.ErrErased) {
			t.Errorf("%s: For after Erase = %v, want ErrErased", name, err)
		}
	}
	// r2 cached the key: it learns of the erasure within its TTL.
	short := pii.NewKeyring(keys, kek, pii.Options{CacheTTL: time.Millisecond})
	if _, err := short.Existing(ctx, subject); !errors.Is(err, pii.ErrErased) {
		t.Errorf("short-TTL keyring: %v, want ErrErased", err)
	}
	h1, err := r.ClaimSecret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h2, err := pii.NewKeyring(keys, kek, pii.Options{}).ClaimSecret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h1.ID("ada@example.com") != h2.ID("ada@example.com") || h1.ID("ada@example.com") == h1.ID("bob@example.com") {
		t.Error("the claim hash is not one stable function of the address")
	}
	if err := r.Erase(ctx, uuid.Nil, time.Now()); err == nil {
		t.Error("the claim secret was erased")
	}
}

// TestRotateUnderLoad rewraps every key under a new KEK while new subjects
// get keys, others are erased and fields are sealed and opened: nothing is
// lost (every field sealed before or during the rotation opens with the
// new KEK alone), and no erased key comes back.
func TestRotateUnderLoad(t *testing.T) {
	for _, engine := range []string{"sqlite", "cql"} {
		t.Run(engine, func(t *testing.T) {
			var keys pii.Keys
			if engine == "sqlite" {
				keys = openKeys(t)
			} else {
				hosts := cqltest.Hosts(t)
				b, err := cql.Open(t.Context(), cql.Config{Hosts: hosts, Keyspace: cqltest.Keyspace(t, hosts), Timeout: 30 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = b.Close() })
				keys = b.DataKeys
			}
			testRotateUnderLoad(t, keys)
		})
	}
}

func testRotateUnderLoad(t *testing.T, keys pii.Keys) {
	ctx := t.Context()
	oldKEK, newKEKv := newKEK(t, 1), newKEK(t, 2)
	before := pii.NewKeyring(keys, oldKEK, pii.Options{})
	type sealed struct {
		subject uuid.UUID
		value   string
	}
	var (
		mu     sync.Mutex
		fields []sealed
		erased = map[uuid.UUID]bool{}
	)
	sealOne := func(r *pii.Keyring, i int) {
		s := uuid.New()
		k, err := r.For(ctx, s)
		if err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		fields = append(fields, sealed{s, k.Seal(pii.FieldEmail, fmt.Sprintf("p%d@example.com", i))})
		mu.Unlock()
	}
	for i := range 300 {
		sealOne(before, i)
	}
	// During the rotation, instances run with the new KEK as current and
	// the old one accepted.
	during := pii.NewKeyring(keys, newKEKv, pii.Options{Old: []pii.KEK{oldKEK}})
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				sealOne(during, 10000*(w+1)+i)
				if i%7 == 0 {
					mu.Lock()
					victim := fields[(i*31+w)%len(fields)].subject
					erased[victim] = true
					mu.Unlock()
					if err := during.Erase(ctx, victim, time.Now()); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	var total pii.Rotation
	for pass := 0; ; pass++ {
		rot, err := during.Rotate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		total.Rewrapped += rot.Rewrapped
		if pass == 0 {
			stop.Store(true)
			wg.Wait()
			continue
		}
		if rot.Rewrapped == 0 {
			break
		}
	}
	if total.Rewrapped < 200 {
		t.Errorf("rewrapped %d keys, want the 300 made before less the erased", total.Rewrapped)
	}
	after := pii.NewKeyring(keys, newKEKv, pii.Options{}) // the old KEK retired
	for i, f := range fields {
		k, err := after.Existing(ctx, f.subject)
		if erased[f.subject] {
			if !errors.Is(err, pii.ErrErased) {
				t.Fatalf("erased subject %s: %v, want ErrErased", f.subject, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("field %d: %v", i, err)
		}
		if _, err := k.Open(pii.FieldEmail, f.value); err != nil {
			t.Fatalf("field %d does not open after the rotation: %v", i, err)
		}
	}
	if err := keys.Scan(ctx, func(wk store.WrappedKey) error {
		if wk.KEK != newKEKv.ID() {
			return fmt.Errorf("key of %s still under %s", wk.Subject, wk.KEK)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	t.Logf("%d fields, %d erased, %d keys rewrapped", len(fields), len(erased), total.Rewrapped)
}
