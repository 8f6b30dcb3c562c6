package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/pii"
)

// writeKEK writes a random KEK to path and returns its id.
func writeKEK(t *testing.T, path string) string {
	t.Helper()
	raw := make([]byte, pii.KEKSize)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(raw)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := pii.NewLocalKEK(raw)
	if err != nil {
		t.Fatal(err)
	}
	return k.ID()
}

// TestKEKRotationUnderLoad rotates the key-encryption key of a running
// orderd while customers register and change their phone: the current KEK
// moves to -kek-old-file, a new one into -kek-file, SIGHUP; orderd rewraps
// every data key under the new one while it serves. Nothing is lost: once
// no key is under the old KEK, orderd restarted with the new KEK alone
// reads every acknowledged customer's e-mail and last phone.
func TestKEKRotationUnderLoad(t *testing.T) {
	keys := t.TempDir()
	cur, old := filepath.Join(keys, "kek"), filepath.Join(keys, "kek.old")
	first := writeKEK(t, cur)
	env := map[string]string{"ORDERD_KEK_FILE": cur, "ORDERD_KEK_OLD_FILE": old}
	s := start(t, "", env)
	datakeys := filepath.Join(s.dataDir, "datakeys.db")

	type customer struct {
		id           uuid.UUID
		email, phone string
	}
	var (
		mu    sync.Mutex
		acked []customer
		stop  atomic.Bool
		wg    sync.WaitGroup
		n     atomic.Int64
	)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				email := fmt.Sprintf("rot-%d-%d-%s@example.com", w, i, uuid.NewString()[:8])
				r := s.call(t, "POST", "/v1/customers", map[string]any{"email": email, "first_name": "R", "last_name": "Otate"}, nil, true)
				if r.Status != http.StatusCreated {
					t.Errorf("registration: %d %s", r.Status, r.Body)
					return
				}
				var c commandResult
				r.json(t, &c)
				phone := fmt.Sprintf("+4470%08d", w*10000000+i)
				if r := s.call(t, "POST", "/v1/customers/"+c.ID.String()+"/phone", map[string]any{"phone": phone}, nil, true); r.Status != http.StatusOK {
					t.Errorf("phone change: %d %s", r.Status, r.Body)
					return
				}
				mu.Lock()
				acked = append(acked, customer{c.ID, email, phone})
				mu.Unlock()
				n.Add(1)
			}
		}()
	}
	waitUntil(t, "some customers under the first KEK", func() bool { return n.Load() >= 40 })

	// The rotation, while the load goes on.
	if err := os.Rename(cur, old); err != nil {
		t.Fatal(err)
	}
	second := writeKEK(t, cur)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	under := func(kek string) int64 {
		return scalar(t, datakeys, fmt.Sprintf(`SELECT count(*) FROM data_keys WHERE kek = '%s'`, kek))
	}
	waitUntil(t, "keys wrapped by the new KEK", func() bool { return under(second) > 0 })
	atRotation := n.Load()
	waitUntil(t, "no key under the old KEK", func() bool { return under(first) == 0 })
	waitUntil(t, "customers registered after the rotation", func() bool { return n.Load() >= atRotation+20 })
	stop.Store(true)
	wg.Wait()
	if t.Failed() {
		return
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if got := under(first); got != 0 {
		t.Fatalf("%d keys under the old KEK after the rotation", got)
	}

	// The old KEK retired: the new one alone reads everything.
	if err := os.Remove(old); err != nil {
		t.Fatal(err)
	}
	s2 := start(t, s.dataDir, map[string]string{"ORDERD_KEK_FILE": cur})
	for _, c := range acked {
		var got customerBody
		s2.do(t, "GET", "/v1/customers/"+c.id.String()+"?min_version=2", nil, http.StatusOK).json(t, &got)
		if got.Email != c.email || got.Phone == nil || *got.Phone != c.phone {
			t.Fatalf("customer %s after the rotation: %+v, want %s %s", c.id, got, c.email, c.phone)
		}
	}
	t.Logf("%d customers, %d of them registered before the rotation", len(acked), atRotation)
}
