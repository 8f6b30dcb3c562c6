package sqlite_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io/fs"
	"path/filepath"
	"testing"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/readmodel/readmodeltest"
	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/migrations"
)

// TestApplyIsOneTransaction checks what this backend promises beyond the
// suite: a batch that fails writes nothing at all, not even the rows of
// other aggregates that it would have written before the failing event.
func TestApplyIsOneTransaction(t *testing.T) {
	v := mustOpen(t, filepath.Join(t.TempDir(), "views.db"))
	ctx := context.Background()
	// 0 registers the customer; 1, 3, 6 are order 1's #1..#3; 2 and 5 order
	// 2's #1, #2; 4 is order 3's #1.
	events := readmodeltest.Pipeline(t, 7)
	if err := v.Apply(ctx, events[:2]); err != nil {
		t.Fatal(err)
	}
	undecodable := events[5]
	undecodable.Data = json.RawMessage(`{"confirmed_at": 7}`)
	for _, tt := range []struct {
		name    string
		batch   []store.Event
		wantErr error // nil: any error
	}{
		{"gap", []store.Event{events[2], events[4], events[6]}, readmodel.ErrGap},
		{"undecodable", []store.Event{events[3], events[2], events[4], undecodable}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := v.Apply(ctx, tt.batch)
			if err == nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Apply: error %v, want %v", err, tt.wantErr)
			}
			for _, e := range []store.Event{events[2], events[4]} {
				if o, err := v.Order(ctx, e.AggregateID); !errors.Is(err, readmodel.ErrNotFound) {
					t.Errorf("order %s, created earlier in the failed batch: %+v, %v; want ErrNotFound", e.AggregateID, o, err)
				}
			}
			if o, err := v.Order(ctx, events[1].AggregateID); err != nil || o.Version != 1 {
				t.Errorf("order 1 = version %d, %v; want 1, as before the failed batch", o.Version, err)
			}
		})
	}
}

// TestMigrationDropsCheckpoint opens a views file made before the feed kept
// the projector's progress: 0002 drops the old checkpoint, and the rows
// stay.
func TestMigrationDropsCheckpoint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "views.db")
	ctx := context.Background()
	old, err := sql.Open("sqlite", sqlite.DSN(path, 0))
	if err != nil {
		t.Fatal(err)
	}
	schema, err := fs.ReadFile(migrations.SQLite, "sqlite/views/0001_views.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)`,
		string(schema),
		`INSERT INTO schema_migrations VALUES (1, '0001_views.sql')`,
		`INSERT INTO projector_checkpoint VALUES ('readmodel', 42)`,
		`INSERT INTO customers VALUES ('0195a000-0000-7000-8000-0000000000c1', 'ada@example.com', 'Ada', 'Lovelace', '', 1,
			'2025-03-01T09:30:00.123456789Z', '2025-03-01T09:30:00.123456789Z')`,
	} {
		if _, err := old.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("make the old file: %v", err)
		}
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	v := mustOpen(t, path)
	if c, err := v.Customer(ctx, uuid.MustParse("0195a000-0000-7000-8000-0000000000c1")); err != nil || c.Email != "ada@example.com" {
		t.Errorf("the old file's customer = %+v, %v; want it kept", c, err)
	}
	if err := v.Apply(ctx, readmodeltest.Pipeline(t, 2)); err != nil {
		t.Errorf("Apply on the migrated file: %v", err)
	}
	check, err := sql.Open("sqlite", sqlite.DSN(path, 0, "query_only(true)"))
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	var tables int
	if err := check.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE name = 'projector_checkpoint'`).Scan(&tables); err != nil || tables != 0 {
		t.Errorf("projector_checkpoint tables after Open: %d, %v; want none", tables, err)
	}
}

// TestApplyManyRows projects batches that change many orders at once, so
// that the upserts write them several rows a statement (of 64, 32, … rows),
// then hands the first half of the feed again: its orders are folded from
// their first event and found further along in the file, so the version
// guard keeps rows inside multi-row statements. Every order, its summary
// and the customer must end at their last event's version, read from the
// file and through the row cache (of a Views opened for the last batch, so
// that the cache holds only what that batch put there: a row the guard
// kept must not be cached as the batch folded it).
func TestApplyManyRows(t *testing.T) {
	events := readmodeltest.Pipeline(t, 600)
	want := map[uuid.UUID]readmodel.Order{}
	var customer uuid.UUID
	for _, e := range events {
		switch e.AggregateType {
		case aggregate.OrderType:
			o := want[e.AggregateID]
			if _, err := o.Apply(e); err != nil {
				t.Fatal(err)
			}
			want[e.AggregateID] = o
		case aggregate.CustomerType:
			customer = e.AggregateID
		}
	}
	if len(want) < 130 {
		t.Fatalf("only %d orders in the pipeline", len(want))
	}
	for _, cached := range []bool{false, true} {
		t.Run(map[bool]string{false: "file", true: "row cache"}[cached], func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "views.db")
			v := mustOpen(t, path)
			ctx := context.Background()
			for _, batch := range [][]store.Event{events[:250], events[200:]} {
				if err := v.Apply(ctx, batch); err != nil {
					t.Fatal(err)
				}
			}
			if cached {
				v = mustOpen(t, path, sqlite.WithRowCache(1000))
			}
			if err := v.Apply(ctx, events[:300]); err != nil {
				t.Fatal(err)
			}
			for id, w := range want {
				o, err := v.Order(ctx, id)
				if err != nil || o.Version != w.Version || o.Status != w.Status {
					t.Errorf("order %s: version %d, %s, %v; want %d, %s", id, o.Version, o.Status, err, w.Version, w.Status)
				}
			}
			sums, err := v.CustomerOrders(ctx, customer, uuid.Nil, 1000)
			if err != nil || len(sums) != len(want) {
				t.Fatalf("customer's orders: %d, %v; want %d", len(sums), err, len(want))
			}
			for _, s := range sums {
				if w := want[s.ID]; s.Version != w.Version || s.Status != w.Status {
					t.Errorf("summary of %s: version %d, %s; want %d, %s", s.ID, s.Version, s.Status, w.Version, w.Status)
				}
			}
			if c, err := v.Customer(ctx, customer); err != nil || c.Version != 1 {
				t.Errorf("customer: version %d, %v; want 1", c.Version, err)
			}
		})
	}
}
