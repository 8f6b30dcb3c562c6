package sqlite

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/relay/ledgertest"
	"github.com/orderd/orderd/internal/store"
)

var (
	aggA = uuid.MustParse("0195a000-0000-7000-8000-00000000000a")
	aggB = uuid.MustParse("0195a000-0000-7000-8000-00000000000b")
)

func mustOpenLedger(t testing.TB, path string) *Ledger {
	t.Helper()
	l, err := OpenLedger(path, zap.NewNop())
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func newLedger(t testing.TB) *Ledger {
	t.Helper()
	return mustOpenLedger(t, filepath.Join(t.TempDir(), "relay.db"))
}

func TestLedgerConformance(t *testing.T) {
	ledgertest.Run(t, func(t *testing.T) relay.Ledger { return newLedger(t) })
	ledgertest.RunFenced(t, func(t *testing.T) (relay.Ledger, store.Leases) {
		s, err := OpenStore(filepath.Join(t.TempDir(), "events.db"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		l := newLedger(t)
		l.FencedBy(s)
		return l, s
	})
}

func list(t testing.TB, l *Ledger) []relay.DeadLetter {
	t.Helper()
	ls, err := l.List(context.Background(), 0, 100)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return ls
}

// TestRecordIsAtomic makes the last insert of a Record fail: none of its
// letters may be stored.
func TestRecordIsAtomic(t *testing.T) {
	ctx := context.Background()
	l := newLedger(t)
	if err := l.Record(ctx, []relay.DeadLetter{ledgertest.Letter(3, aggA, 1, relay.Failed)}); err != nil {
		t.Fatal(err)
	}
	good := ledgertest.Letter(8, aggB, 1, relay.Failed)
	sameEvent := ledgertest.Letter(9, aggA, 1, relay.Parked) // aggA's sequence 1 is at position 3
	if err := l.Record(ctx, []relay.DeadLetter{good, sameEvent}); err == nil {
		t.Fatal("Record with a second position for one event succeeded")
	}
	if got := ledgertest.Positions(list(t, l)); !reflect.DeepEqual(got, []int64{3}) {
		t.Errorf("letters after a failed Record: %v, want [3]", got)
	}
}

// TestReopen closes the ledger and opens the file again, at a path that
// needs escaping in a dsn: letters and requests are still there.
func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "relay ?#%.db")
	l := mustOpenLedger(t, path)
	want := ledgertest.UTC(ledgertest.Letter(3, aggA, 1, relay.Failed), ledgertest.Letter(4, aggA, 2, relay.Parked))
	if err := l.Record(ctx, want); err != nil {
		t.Fatal(err)
	}
	q, err := l.Request(ctx, relay.Request{Position: 3, ID: uuid.New(), Op: relay.OpReplay})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	l = mustOpenLedger(t, path)
	if got := list(t, l); !reflect.DeepEqual(got, want) {
		t.Errorf("letters after reopen =\n%+v\nwant\n%+v", got, want)
	}
	if got, err := l.Requests(ctx); err != nil || len(got) != 1 || got[0].ID != q.ID {
		t.Errorf("requests after reopen = %+v, %v; want the pending replay", got, err)
	}
}

// TestDurabilitySettings checks the pragmas the package comment promises,
// and that the tables 0003 dropped are gone.
func TestDurabilitySettings(t *testing.T) {
	l := newLedger(t)
	for pragma, want := range map[string]string{"journal_mode": "wal", "synchronous": "2"} { // 2 is FULL
		var got string
		if err := l.w.QueryRow("PRAGMA " + pragma).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("PRAGMA %s = %s, want %s", pragma, got, want)
		}
	}
	var n int
	if err := l.r.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE name IN ('relay_checkpoint', 'handled')`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d of the dropped tables left (%v)", n, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Count(context.Background()); err == nil {
		t.Error("Count after Close succeeded")
	}
}
