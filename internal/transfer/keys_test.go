package transfer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/transfer"
)

func openDataKeys(t *testing.T) *sqlite.DataKeys {
	t.Helper()
	d, err := sqlite.OpenDataKeys(context.Background(), filepath.Join(t.TempDir(), "datakeys.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// TestKeysTravel: an export carries the source's live data keys, wrapped as
// stored, after the events; an import creates them in the target (again
// harmlessly on a re-run) and leaves erased ones out; a target without a
// key store refuses such a stream.
func TestKeysTravel(t *testing.T) {
	ctx := context.Background()
	src := openSQLite(t)
	populate(t, src, 10)
	srcKeys := openDataKeys(t)
	want := map[uuid.UUID]string{}
	for i := range 30 {
		k := store.WrappedKey{Subject: uuid.New(), KEK: "kek-1", Wrapped: []byte(fmt.Sprintf("wrapped-%d", i)), Created: time.Now()}
		if _, err := srcKeys.Create(ctx, k); err != nil {
			t.Fatal(err)
		}
		want[k.Subject] = string(k.Wrapped)
	}
	gone := uuid.New()
	if _, err := srcKeys.Create(ctx, store.WrappedKey{Subject: gone, KEK: "kek-1", Wrapped: []byte("erased"), Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := srcKeys.Erase(ctx, gone, time.Now()); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := transfer.Export(ctx, src, transfer.Rows{Keys: srcKeys}, &buf, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	stream := buf.Bytes()
	if !bytes.Contains(stream, []byte(`"keys":30}`)) {
		t.Fatalf("the trailer does not count 30 keys: %s", stream[bytes.LastIndexByte(stream[:len(stream)-1], '\n'):])
	}
	if err := transfer.Import(ctx, openSQLite(t), bytes.NewReader(stream), transfer.Options{}, nil); err == nil || !strings.Contains(err.Error(), "no key store") {
		t.Fatalf("import of keys without a key store: %v", err)
	}
	dst, dstKeys := openSQLite(t), openDataKeys(t)
	for range 2 { // a re-run changes nothing
		if err := transfer.Import(ctx, dst, bytes.NewReader(stream), transfer.Options{Keys: dstKeys}, nil); err != nil {
			t.Fatal(err)
		}
	}
	got := map[uuid.UUID]string{}
	if err := dstKeys.Scan(ctx, func(k store.WrappedKey) error {
		if k.KEK != "kek-1" {
			return fmt.Errorf("key of %s under %q", k.Subject, k.KEK)
		}
		got[k.Subject] = string(k.Wrapped)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("target keys %v, want %v", got, want)
	}
	if _, err := dstKeys.Get(ctx, gone); !errors.Is(err, store.ErrKeyNotFound) {
		t.Errorf("the erased key in the target: %v, want none", err)
	}
}
