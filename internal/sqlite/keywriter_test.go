package sqlite

import (
	"crypto/sha256"
	"database/sql"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

func keyRecord(key string) store.IdempotencyRecord {
	now := time.Now().UTC()
	fp := sha256.Sum256([]byte(key))
	return store.IdempotencyRecord{Key: key, ID: uuid.Must(uuid.NewV7()), Fingerprint: fp[:], Owner: uuid.New(),
		Created: now, Updated: now, Expires: now.Add(time.Hour)}
}

// holdWriter has the key store's writer run a write that waits until the
// returned release is called, so that the writes sent meanwhile queue for
// the next batch.
func holdWriter(t *testing.T, k *Keys) (release func()) {
	t.Helper()
	held, hold := make(chan struct{}), make(chan struct{})
	go func() {
		_ = k.write(func(*sql.Tx) error { close(held); <-hold; return nil })
	}()
	<-held
	return func() { close(hold) }
}

// queued is a generous pause for goroutines to reach their send.
const queued = 500 * time.Millisecond

// TestKeyWritesGroupCommit: writes sent while a batch commits run together
// in the next transaction.
func TestKeyWritesGroupCommit(t *testing.T) {
	k := openKeys(t, filepath.Join(t.TempDir(), "keys.db"), KeysOptions{})
	release := holdWriter(t, k)
	const n = 10
	var (
		mu  sync.Mutex
		txs = map[*sql.Tx]int{}
		wg  sync.WaitGroup
	)
	for range n {
		wg.Go(func() {
			if err := k.write(func(tx *sql.Tx) error {
				mu.Lock()
				defer mu.Unlock()
				txs[tx]++
				return nil
			}); err != nil {
				t.Errorf("write: %v", err)
			}
		})
	}
	time.Sleep(queued)
	release()
	wg.Wait()
	if len(txs) >= n {
		t.Fatalf("%d writes sent during a commit ran in %d transactions; want them grouped", n, len(txs))
	}
	t.Logf("%d writes in %d transaction(s)", n, len(txs))
}

// TestKeyWritesFailTogether: a write that fails spoils its batch: the other
// writes of the batch fail with its error and leave nothing, and the next
// batch works.
func TestKeyWritesFailTogether(t *testing.T) {
	k := openKeys(t, filepath.Join(t.TempDir(), "keys.db"), KeysOptions{})
	ctx := t.Context()
	boom := errors.New("boom")
	release := holdWriter(t, k)
	a, b := keyRecord("a "+uuid.NewString()), keyRecord("b "+uuid.NewString())
	errs := make([]error, 3)
	var wg sync.WaitGroup
	wg.Go(func() { _, _, errs[0] = k.Begin(ctx, a) })
	wg.Go(func() { errs[1] = k.write(func(*sql.Tx) error { return boom }) })
	wg.Go(func() { _, _, errs[2] = k.Begin(ctx, b) })
	time.Sleep(queued)
	release()
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, boom) {
			t.Errorf("write %d of the spoilt batch: %v, want boom", i, err)
		}
	}
	for _, rec := range []store.IdempotencyRecord{a, b} {
		if _, found, err := k.Get(ctx, rec.Key); err != nil || found {
			t.Errorf("key %q after the spoilt batch: found %v, %v; want nothing", rec.Key, found, err)
		}
		if _, began, err := k.Begin(ctx, rec); err != nil || !began {
			t.Errorf("Begin of %q again: began %v, %v; want it to begin", rec.Key, began, err)
		}
	}
}
