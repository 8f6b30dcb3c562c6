package cql

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/readmodel/readmodeltest"
)

// TestCatalog runs the catalog suite, a keyspace per test (each test
// promotes and drops generations); every catalog has a session of its own,
// as a separate orderd process would.
func TestCatalog(t *testing.T) {
	readmodeltest.RunCatalog(t, func(t *testing.T) readmodeltest.CatalogBackend {
		e := newEnv(t)
		return readmodeltest.CatalogBackend{
			Catalog:       e.catalog(t),
			Again:         func(t *testing.T) readmodel.Catalog { return e.catalog(t) },
			TimePrecision: time.Millisecond,
			Leases:        e.store,
		}
	})
}

// TestGeneration: a generation other than 0 has the columns, keys and
// clustering of generation 0, the whole read-model suite holds on its
// tables (and only there), and a rebuild that ended without releasing the lock does not
// block the next Begin.
func TestGeneration(t *testing.T) {
	e := newEnv(t)
	const gen = 2
	g, err := e.catalog(t).Create(t.Context(), gen)
	if err != nil {
		t.Fatalf("Create(%d): %v", gen, err)
	}
	if got := g.(*Views).Generation(); got != gen {
		t.Fatalf("Create(%d) returned generation %d", gen, got)
	}
	t.Run("SameSchema", func(t *testing.T) {
		want, got := tablesOf(0), tablesOf(gen)
		for i, name := range want.all() {
			w, g := e.columns(t, name), e.columns(t, got.all()[i])
			if len(w) == 0 || fmt.Sprint(w) != fmt.Sprint(g) {
				t.Errorf("columns of %s:\n%v\nwant those of %s:\n%v", got.all()[i], g, name, w)
			}
		}
	})
	t.Run("CommentsPointAtRebuild", func(t *testing.T) {
		for _, name := range append(tablesOf(0).all(), tablesOf(gen).all()...) {
			var comment string
			err := e.store.Session().Session.Query(`SELECT comment FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?`,
				e.ks, name).Scan(&comment)
			if err != nil || !strings.Contains(comment, "orderd rebuild") {
				t.Errorf("comment of %s = %q, %v; want it to point at orderd rebuild", name, comment, err)
			}
		}
	})
	t.Run("Conformance", func(t *testing.T) {
		readmodeltest.Run(t, func(t *testing.T) readmodeltest.Backend {
			return readmodeltest.Backend{
				Views:         e.views(t, nil, WithGeneration(gen)),
				Second:        func(t *testing.T) readmodeltest.Views { return e.views(t, nil, WithGeneration(gen)) },
				TimePrecision: time.Millisecond,
			}
		})
	})
	t.Run("RowsInItsTables", func(t *testing.T) {
		for i, name := range tablesOf(gen).all() {
			if n := e.rows(t, name); n == 0 {
				t.Errorf("%s is empty after the suite ran on generation %d", name, gen)
			}
			if n := e.rows(t, tablesOf(0).all()[i]); n != 0 {
				t.Errorf("%s of generation 0 has %d rows after the suite ran on generation %d", tablesOf(0).all()[i], n, gen)
			}
		}
	})
	t.Run("EndedHolder", func(t *testing.T) {
		testEndedHolder(t, e)
	})
}

// columns returns, sorted by name, each column of table with its type,
// kind and clustering order.
func (e *env) columns(t *testing.T, table string) []string {
	t.Helper()
	iter := e.store.Session().Session.Query(`SELECT column_name, type, kind, clustering_order, position
		FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?`, e.ks, table).Iter()
	var (
		out                  []string
		name, typ, kind, ord string
		pos                  int
	)
	for iter.Scan(&name, &typ, &kind, &ord, &pos) {
		out = append(out, fmt.Sprintf("%s %s %s %s %d", name, typ, kind, ord, pos))
	}
	if err := iter.Close(); err != nil {
		t.Fatalf("columns of %s: %v", table, err)
	}
	return out // system_schema.columns clusters by column name
}

// rows counts the rows of table.
func (e *env) rows(t *testing.T, table string) int64 {
	t.Helper()
	var n int64
	if err := e.store.Session().Session.Query(`SELECT COUNT(*) FROM ` + table).Scan(&n); err != nil {
		t.Fatalf("count the rows of %s: %v", table, err)
	}
	return n
}

// testEndedHolder: a rebuild saved as done whose lock was left behind (a
// hand edit, or a crash in a future Save that did it in two steps) loses
// the lock to the next Begin.
func testEndedHolder(t *testing.T, e *env) {
	c := e.catalog(t)
	ctx := t.Context()
	now := time.Now().UTC().Truncate(time.Millisecond)
	first := readmodel.Rebuild{ID: uuid.Must(uuid.NewV7()), State: readmodel.RebuildPending, RequestedAt: now}
	if _, ok, err := c.Begin(ctx, first); !ok || err != nil {
		t.Fatalf("Begin(first) = %v, %v", ok, err)
	}
	// Save's path without the release: the row ends, the lock stays.
	ended, err := e.store.Session().Session.Query(`UPDATE read_model_rebuilds SET state = ? WHERE catalog = ? AND id = ? IF EXISTS`,
		string(readmodel.RebuildDone), rebuildsPartition, first.ID).MapScanCAS(map[string]any{})
	if err != nil || !ended {
		t.Fatalf("end the first rebuild by hand: %v, %v", ended, err)
	}
	if err != nil {
		t.Fatalf("end the first rebuild by hand: %v", err)
	}
	if held, err := c.holds(ctx, first.ID); err != nil || !held {
		t.Fatalf("the first rebuild holds the lock: %v, %v; want true", held, err)
	}
	second := readmodel.Rebuild{ID: uuid.Must(uuid.NewV7()), State: readmodel.RebuildPending, RequestedAt: now.Add(time.Second)}
	got, ok, err := e.catalog(t).Begin(ctx, second)
	if err != nil || !ok || got.ID != second.ID {
		t.Fatalf("Begin(second) after the holder ended = %v, %v, %v; want it begun", got.ID, ok, err)
	}
	third := readmodel.Rebuild{ID: uuid.Must(uuid.NewV7()), State: readmodel.RebuildPending, RequestedAt: now.Add(2 * time.Second)}
	if got, ok, err := c.Begin(ctx, third); err != nil || ok || got.ID != second.ID {
		t.Fatalf("Begin(third) = %v, %v, %v; want refused with the second", got.ID, ok, err)
	}
}
