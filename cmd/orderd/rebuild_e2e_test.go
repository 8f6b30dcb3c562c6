package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/orderd/orderd/internal/api/apitest"
	"github.com/orderd/orderd/internal/cli"
	"github.com/orderd/orderd/internal/readmodel/readmodeltest"
	"github.com/orderd/orderd/internal/store"
)

const rebuildToken = "rebuild-s3cret"

// rebuildBody is a rebuild as the admin API shows it.
type rebuildBody struct {
	ID              uuid.UUID
	State           string
	Generation      *int64
	Replaces        *int64
	EventsDone      int64 `json:"events_done"`
	EventsTotal     int64 `json:"events_total"`
	Error           *string
	CancelRequested bool `json:"cancel_requested"`
}

func (s *service) rebuild(t testing.TB, path string) rebuildBody {
	t.Helper()
	var r rebuildBody
	s.do(t, "GET", path, nil, http.StatusOK, "Authorization", "Bearer "+rebuildToken).json(t, &r)
	return r
}

// prefill appends n events of staggered order lifecycles to the store env
// configures, as commands would have, one Append per aggregate, and returns
// the orders among them, in the order they were created.
func prefill(t testing.TB, dir string, env map[string]string, n int) []uuid.UUID {
	t.Helper()
	vars := map[string]string{"ORDERD_DATA_DIR": dir}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := parseConfig(nil, func(k string) string { return vars[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	b, err := openBackend(ctx, cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Close() }()
	byAgg := map[uuid.UUID][]store.Event{}
	var ids, orders []uuid.UUID
	for _, e := range readmodeltest.Pipeline(t, n) {
		if _, ok := byAgg[e.AggregateID]; !ok {
			ids = append(ids, e.AggregateID)
			if e.AggregateType == "Order" {
				orders = append(orders, e.AggregateID)
			}
		}
		byAgg[e.AggregateID] = append(byAgg[e.AggregateID], e)
	}
	// Appends of different aggregates in parallel, as concurrent commands
	// are: the store commits them in groups.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for _, id := range ids {
		g.Go(func() error { return b.events.Append(gctx, id, 0, byAgg[id]) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	return orders
}

// TestRebuildCommand: `orderd rebuild` rebuilds the read models of a
// running orderd while it serves, follows the rebuild to its switch with
// plain progress lines and exits 0; the admin API shows the rebuild,
// refuses a second one while one runs, and words its errors.
func TestRebuildCommand(t *testing.T) {
	s := start(t, "", map[string]string{"ORDERD_ADMIN_TOKEN": rebuildToken})
	auth := []string{"Authorization", "Bearer " + rebuildToken}
	cust := s.registerCustomer(t, "rebuild@example.com")
	o := s.createOrder(t, cust.ID)
	s.do(t, "POST", "/v1/orders/"+o.ID.String()+"/confirm", nil, http.StatusOK)
	before := s.order(t, o.ID, 2)

	if p := s.do(t, "GET", "/v1/admin/rebuilds/latest", nil, http.StatusNotFound, auth...).problem(t); p.Code != "rebuild_not_found" {
		t.Fatalf("latest before any rebuild: %+v", p)
	}

	var out, errOut bytes.Buffer
	args := []string{"-addr", s.base, "-token", rebuildToken, "-every", "20ms"}
	if err := cli.Rebuild(t.Context(), args, func(string) string { return "" }, &out, &errOut, false); err != nil {
		t.Fatalf("orderd rebuild: %v\nstdout:\n%s\nstderr:\n%s", err, &out, &errOut)
	}
	t.Logf("orderd rebuild printed:\n%s", &out)
	for _, want := range []string{"requested", ": pending,", "done: generation 1 serves reads (it replaced 0)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("orderd rebuild printed no %q:\n%s", want, &out)
		}
	}
	if strings.Contains(out.String(), "\r") {
		t.Errorf("not a terminal, but orderd rebuild redrew lines:\n%q", &out)
	}
	r := s.rebuild(t, "/v1/admin/rebuilds/latest")
	if r.State != "done" || *r.Generation != 1 || *r.Replaces != 0 || r.EventsDone < 3 {
		t.Fatalf("latest rebuild = %+v; want done, generation 1 from 0, every event", r)
	}
	if after := s.order(t, o.ID, 0); !reflect.DeepEqual(after, before) {
		t.Fatalf("order after the rebuild %+v, before %+v", after, before)
	}
	// Commands go on into the new generation.
	s.do(t, "POST", "/v1/orders/"+o.ID.String()+"/ship", map[string]any{"tracking_number": "T-1", "carrier": "DHL"}, http.StatusOK)
	if got := s.order(t, o.ID, 3); got.Status != "shipped" {
		t.Fatalf("after the rebuild, order %+v", got)
	}

	// status prints one line; cancelling an ended rebuild is a conflict.
	out.Reset()
	if err := cli.Rebuild(t.Context(), append(args, "status"), func(string) string { return "" }, &out, &errOut, false); err != nil {
		t.Fatalf("orderd rebuild status: %v", err)
	}
	if !strings.Contains(out.String(), r.ID.String()+": done") {
		t.Fatalf("orderd rebuild status printed %q", &out)
	}
	errOut.Reset()
	if err := cli.Rebuild(t.Context(), append(args, "cancel", r.ID.String()), func(string) string { return "" }, &out, &errOut, false); err == nil ||
		!strings.Contains(errOut.String(), "rebuild_ended") {
		t.Fatalf("orderd rebuild cancel of an ended rebuild: %v, stderr %q", err, &errOut)
	}
	if p := s.do(t, "POST", "/v1/admin/rebuilds/"+r.ID.String()+"/cancel", nil, http.StatusConflict, auth...).problem(t); p.Code != "rebuild_ended" {
		t.Fatalf("cancel of an ended rebuild: %+v", p)
	}
	if p := s.do(t, "GET", "/v1/admin/rebuilds/"+uuid.NewString(), nil, http.StatusNotFound, auth...).problem(t); p.Code != "rebuild_not_found" {
		t.Fatalf("unknown rebuild: %+v", p)
	}
	if p := s.call(t, "GET", "/v1/admin/rebuilds/42", nil, map[string]string{"Authorization": "Bearer " + rebuildToken}, false).problem(t); p.Status != 404 {
		t.Fatalf("a rebuild id that is not a UUID: %+v", p)
	}
	if p := s.call(t, "GET", "/v1/admin/rebuilds/00000000-0000-0000-0000-000000000000", nil, map[string]string{"Authorization": "Bearer " + rebuildToken}, false).problem(t); p.Status != 400 || p.Field != "id" {
		t.Fatalf("the nil UUID as a rebuild id: %+v", p)
	}
	// latest is not an id: it takes GET and HEAD only.
	r405 := s.call(t, "DELETE", "/v1/admin/rebuilds/latest", nil, map[string]string{"Authorization": "Bearer " + rebuildToken}, false)
	if p := r405.problem(t); p.Status != 405 || r405.Header.Get("Allow") != "GET, HEAD, OPTIONS" {
		t.Fatalf("DELETE /v1/admin/rebuilds/latest: %+v, Allow %q", p, r405.Header.Get("Allow"))
	}
	if p := s.call(t, "POST", "/v1/admin/rebuilds", nil, nil, false).problem(t); p.Status != http.StatusUnauthorized {
		t.Fatalf("rebuild without the token: %+v", p)
	}

	// One at a time: a second request while the first is pending is
	// refused, pointing at the first; the CLI says how to follow it.
	var first rebuildBody
	resp := s.do(t, "POST", "/v1/admin/rebuilds", nil, http.StatusAccepted, auth...)
	resp.json(t, &first)
	if loc := resp.Header.Get("Location"); loc != "/v1/admin/rebuilds/"+first.ID.String() {
		t.Fatalf("Location %q", loc)
	}
	refused := s.do(t, "POST", "/v1/admin/rebuilds", nil, http.StatusConflict, auth...)
	if p := refused.problem(t); p.Code != "rebuild_running" || !strings.Contains(p.Detail, first.ID.String()) {
		t.Fatalf("second rebuild: %+v", p)
	}
	if loc := refused.Header.Get("Location"); loc != "/v1/admin/rebuilds/"+first.ID.String() {
		t.Fatalf("409's Location %q, want the running rebuild", loc)
	}
	errOut.Reset()
	if err := cli.Rebuild(t.Context(), args, func(string) string { return "" }, &out, &errOut, false); err == nil ||
		!strings.Contains(errOut.String(), "orderd rebuild follow") {
		t.Fatalf("orderd rebuild while one runs: %v, stderr %q", err, &errOut)
	}
	out.Reset()
	if err := cli.Rebuild(t.Context(), append(args, "follow", first.ID.String()), func(string) string { return "" }, &out, &errOut, false); err != nil {
		t.Fatalf("orderd rebuild follow: %v\n%s", err, &out)
	}
	if r := s.rebuild(t, "/v1/admin/rebuilds/"+first.ID.String()); r.State != "done" || *r.Generation != 2 {
		t.Fatalf("second rebuild = %+v", r)
	}
	// Only the current generation's file is left, once the grace is over.
	waitFor(t, 10*time.Second, "the previous generation's file to go", func() bool {
		_, err0 := os.Stat(filepath.Join(s.dataDir, "views.db"))
		_, err1 := os.Stat(filepath.Join(s.dataDir, "views.1.db"))
		_, err2 := os.Stat(filepath.Join(s.dataDir, "views.2.db"))
		return os.IsNotExist(err0) && os.IsNotExist(err1) && err2 == nil
	})
}

// waitFor polls cond every 20 ms until it holds, failing after within.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRebuildKill9 kills orderd with SIGKILL while a rebuild replays: the
// restarted orderd serves the old read models, marks the rebuild failed,
// drops its half-built generation, and a new rebuild works.
func TestRebuildKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	testRebuildKill9(t, nil, 80_000, func(dir string) bool {
		_, err := os.Stat(filepath.Join(dir, "views.1.db"))
		return err == nil
	})
}

func testRebuildKill9(t *testing.T, env map[string]string, events int, halfBuilt func(dir string) bool) {
	dir := t.TempDir()
	began := time.Now()
	orders := prefill(t, dir, env, events)
	t.Logf("prefilled %d events in %s", events, time.Since(began))
	env = maps.Clone(env)
	if env == nil {
		env = map[string]string{}
	}
	env["ORDERD_ADMIN_TOKEN"] = rebuildToken
	auth := []string{"Authorization", "Bearer " + rebuildToken}
	service := func(p *process) *service {
		return &service{t: t, base: p.base, dataDir: dir, router: apitest.Contract(t, p.base), http: &http.Client{Timeout: 30 * time.Second}}
	}
	p := startProcess(t, dir, env)
	s := service(p)
	// The test reads the first order, so it waits for that order's last
	// event to be projected: the CQL projector follows no global order, so
	// the last order's row says nothing of the first's. It waits for the
	// last order too, as the sign that the prefilled log is projected.
	for _, id := range []uuid.UUID{orders[0], orders[len(orders)-1]} {
		path := fmt.Sprintf("/v1/orders/%s?min_version=%d", id, len(s.events(t, "orders", id)))
		waitFor(t, time.Minute, "the projector to project order "+id.String(), func() bool {
			return s.call(t, "GET", path, nil, nil, true).Status == http.StatusOK
		})
	}
	before := s.order(t, orders[0], 0)
	t.Logf("projected by %s", time.Since(began))

	var r rebuildBody
	s.do(t, "POST", "/v1/admin/rebuilds", nil, http.StatusAccepted, auth...).json(t, &r)
	waitFor(t, 30*time.Second, "the rebuild to replay", func() bool {
		got := s.rebuild(t, "/v1/admin/rebuilds/"+r.ID.String())
		if got.State != "pending" && got.State != "replaying" {
			t.Fatalf("the rebuild went past replaying before the kill (%s): make the log larger", got.State)
		}
		return got.State == "replaying" && halfBuilt(dir)
	})
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()

	p = startProcess(t, dir, env)
	s = service(p)
	if got := s.order(t, orders[0], 0); !reflect.DeepEqual(got, before) {
		t.Fatalf("after the kill, order %+v, before %+v", got, before)
	}
	waitFor(t, 30*time.Second, "the interrupted rebuild to be marked failed", func() bool {
		return s.rebuild(t, "/v1/admin/rebuilds/"+r.ID.String()).State == "failed"
	})
	failed := s.rebuild(t, "/v1/admin/rebuilds/"+r.ID.String())
	if failed.Error == nil || !strings.Contains(*failed.Error, "interrupted") {
		t.Fatalf("interrupted rebuild = %+v; want failed, saying it was interrupted", failed)
	}
	// Recovery marks the rebuild failed, then drops what it built: the
	// generation goes a moment after the state shows.
	waitFor(t, 30*time.Second, "the half-built generation to be dropped after the restart", func() bool {
		return !halfBuilt(dir)
	})
	var again rebuildBody
	s.do(t, "POST", "/v1/admin/rebuilds", nil, http.StatusAccepted, auth...).json(t, &again)
	waitFor(t, 2*time.Minute, "the new rebuild to end", func() bool {
		again = s.rebuild(t, "/v1/admin/rebuilds/"+again.ID.String())
		return again.State == "done" || again.State == "failed" || again.State == "cancelled"
	})
	if again.State != "done" || again.EventsDone < int64(events) {
		t.Fatalf("rebuild after the kill = %+v; want done with every event", again)
	}
	if got := s.order(t, orders[0], 0); !reflect.DeepEqual(got, before) {
		t.Fatalf("after the new rebuild, order %+v, before %+v", got, before)
	}
	t.Logf("rebuild after the kill: %d events", again.EventsDone)
}

// TestRebuildKill9OnCassandra is TestRebuildKill9 with ORDERD_STORE=scylla
// on Cassandra: there the half-built generation is a set of tables.
func TestRebuildKill9OnCassandra(t *testing.T) {
	env := scyllaEnv(t)
	c := gocql.NewCluster(strings.Split(env["ORDERD_SCYLLA_HOSTS"], ",")...)
	c.Timeout = 15 * time.Second
	sess, err := c.CreateSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	testRebuildKill9(t, env, 4000, func(string) bool {
		var n int
		err := sess.Query(`SELECT count(*) FROM system_schema.tables WHERE keyspace_name = ? AND table_name = 'order_read_model_g1'`,
			env["ORDERD_SCYLLA_KEYSPACE"]).Scan(&n)
		if err != nil {
			t.Fatalf("read the schema: %v", err)
		}
		return n == 1
	})
}
