package sqlite

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/storetest"
)

func openTestDataKeys(t *testing.T, path string) *DataKeys {
	t.Helper()
	d, err := OpenDataKeys(t.Context(), path)
	if err != nil {
		t.Fatalf("OpenDataKeys: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

func TestDataKeysConformance(t *testing.T) {
	storetest.RunDataKeys(t, func(t *testing.T) store.DataKeys {
		return openTestDataKeys(t, filepath.Join(t.TempDir(), "datakeys.db"))
	})
}

// TestDataKeysEraseLeavesNoBytes: after an erasure, neither datakeys.db nor
// its WAL holds the erased key's bytes (secure_delete and the truncated
// WAL), while a key not erased is still there.
func TestDataKeysEraseLeavesNoBytes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "datakeys.db")
	d := openTestDataKeys(t, path)
	ctx := t.Context()
	secret := []byte("ERASE-ME-wrapped-key-bytes-0123456789")
	kept := []byte("KEEP-ME-wrapped-key-bytes-9876543210")
	subject := uuid.New()
	for _, k := range []store.WrappedKey{
		{Subject: subject, KEK: "kek-1", Wrapped: secret, Created: time.Now()},
		{Subject: uuid.New(), KEK: "kek-1", Wrapped: kept, Created: time.Now()},
	} {
		if _, err := d.Create(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if !filesHold(t, dir, secret) {
		t.Fatal("the key's bytes are in no file before the erasure: the search finds nothing")
	}
	if err := d.Erase(ctx, subject, time.Now()); err != nil {
		t.Fatal(err)
	}
	if filesHold(t, dir, secret) {
		t.Error("an erased key's bytes are still in datakeys.db or its WAL")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if filesHold(t, dir, secret) {
		t.Error("an erased key's bytes are in datakeys.db after Close")
	}
	if !filesHold(t, dir, kept) {
		t.Error("the key not erased is gone from the files")
	}
}

// filesHold reports whether a file of dir holds b.
func filesHold(t *testing.T, dir string, b []byte) bool {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, b) {
			return true
		}
	}
	return false
}
