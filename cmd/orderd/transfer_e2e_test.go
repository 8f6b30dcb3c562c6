package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/storetest"
)

// transferRead is a GET whose answer must survive a move, with the
// version to wait for.
type transferRead struct {
	path    string
	version int64
}

// populateForTransfer drives customers and orders through their lifecycle
// on s, and returns the reads of every one of them.
func populateForTransfer(t *testing.T, s *service, customers, orders int) []transferRead {
	t.Helper()
	var reads []transferRead
	custs := make([]commandResult, customers)
	for i := range custs {
		custs[i] = s.registerCustomer(t, fmt.Sprintf("move%d@example.com", i))
		v := custs[i].Version
		if i%3 == 0 {
			var r commandResult
			s.do(t, "POST", fmt.Sprintf("/v1/customers/%s/phone", custs[i].ID), map[string]any{"phone": "+15550199"}, http.StatusOK).json(t, &r)
			v = r.Version
		}
		reads = append(reads, transferRead{"/v1/customers/" + custs[i].ID.String(), v})
	}
	for i := range orders {
		cust := custs[i%customers].ID
		o := s.createOrder(t, cust)
		id := o.ID.String()
		steps := orderSteps(i)
		n := i % len(steps) // orders stop at every stage
		v := o.Version
		for _, st := range steps[:n+1] {
			var r commandResult
			s.do(t, st.method, "/v1/orders/"+id+st.path, st.body, http.StatusOK, "X-Correlation-ID", uuid.NewString()).json(t, &r)
			v = r.Version
		}
		if n < 2 {
			var r commandResult
			s.do(t, "POST", "/v1/orders/"+id+"/cancel", map[string]any{"reason": "moved"}, http.StatusOK).json(t, &r)
			v = r.Version
		}
		reads = append(reads, transferRead{"/v1/orders/" + id, v}, transferRead{"/v1/orders/" + id + "/events", 0})
	}
	for _, c := range custs {
		reads = append(reads, transferRead{"/v1/customers/" + c.ID.String() + "/orders", 0}, transferRead{"/v1/customers/" + c.ID.String() + "/events", 0})
	}
	return reads
}

// orderStep is a command on an existing order: its method, the path
// after the order's, its body.
type orderStep struct {
	method, path string
	body         any
}

// orderSteps are the commands that take order i from created to
// delivered, in order.
func orderSteps(i int) []orderStep {
	return []orderStep{
		{"PUT", "/items", map[string]any{"items": []itemBody{{uuid.NewString(), 1 + i%4}}}},
		{"POST", "/confirm", nil},
		{"POST", "/ship", map[string]any{"tracking_number": fmt.Sprintf("T-%d", i), "carrier": "DHL"}},
		{"POST", "/deliver", map[string]any{"signature": fmt.Sprintf("Jane Roe %d", i)}},
	}
}

// answers GETs every read on s, waiting for its version.
func answers(t *testing.T, s *service, reads []transferRead) map[string]string {
	t.Helper()
	out := make(map[string]string, len(reads))
	for _, r := range reads {
		path := r.path
		if r.version > 0 {
			path += fmt.Sprintf("?min_version=%d", r.version)
		}
		out[r.path] = string(s.do(t, "GET", path, nil, http.StatusOK).Body)
	}
	return out
}

// rfc3339 matches the RFC 3339 timestamps of an answer.
var rfc3339 = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`)

// toMillis writes every timestamp of an answer to the millisecond, which
// is what a CQL store keeps of an event's time.
func toMillis(s string) string {
	return rfc3339.ReplaceAllStringFunc(s, func(m string) string {
		ts, err := time.Parse(time.RFC3339Nano, m)
		if err != nil {
			return m
		}
		return ts.Truncate(time.Millisecond).Format(time.RFC3339Nano)
	})
}

// onTransferPorts opens the engine of env (SQLite in its data directory,
// or its keyspace) as export and import do, runs fn on its ports and
// closes it.
func onTransferPorts(t testing.TB, env map[string]string, fn func(p transferPorts)) {
	t.Helper()
	cfg, err := parseConfig(nil, func(k string) string { return env[k] }, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := openTransferStore(context.Background(), cfg, newLogger(cfg, os.Stderr))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.close() }()
	fn(p)
}

// logEvents reads every aggregate's events of env's store, without
// upcasting, keyed by aggregate.
func logEvents(t testing.TB, env map[string]string) (events map[uuid.UUID][]store.Event) {
	t.Helper()
	onTransferPorts(t, env, func(p transferPorts) { events = storetest.ByAggregate(t, p.st) })
	return events
}

// logClaims reads every e-mail claim row of env's store, one line a row
// (key, attempt, customer, since, time), sorted.
func logClaims(t testing.TB, env map[string]string) (rows []string) {
	t.Helper()
	onTransferPorts(t, env, func(p transferPorts) {
		if err := p.claims.Scan(context.Background(), func(key uuid.UUID, r store.ClaimRow) error {
			rows = append(rows, fmt.Sprintf("%s %s %s %d %s", key, r.Attempt, r.Customer, r.Since, r.At.UTC().Format(time.RFC3339Nano)))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})
	slices.Sort(rows)
	return rows
}

// TestExportImportToCluster moves a populated embedded deployment with
// the two commands, to a fresh SQLite directory and to a fresh Cassandra
// keyspace: every aggregate's events are the source's (ids, sequences,
// timestamps, payload bytes, metadata), so are the e-mail claim rows, and
// a real orderd on each target answers every GET as the source did, its
// read models projected from the imported events, and refuses a moved
// customer's address to another.
func TestExportImportToCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds read models on three deployments")
	}
	srcDir := t.TempDir()
	src := start(t, srcDir, nil)
	reads := populateForTransfer(t, src, 30, 80)
	want := answers(t, src, reads)
	if err := src.stop(); err != nil {
		t.Fatal(err)
	}
	srcEnv := map[string]string{"ORDERD_DATA_DIR": srcDir, "ORDERD_LOG_LEVEL": "warn"}
	srcEvents := logEvents(t, srcEnv)
	total := 0
	for _, evs := range srcEvents {
		total += len(evs)
	}
	if total < 300 {
		t.Fatalf("the source holds %d events, want a few hundred", total)
	}
	srcClaims := logClaims(t, srcEnv)
	if len(srcClaims) < 30 {
		t.Fatalf("the source holds %d e-mail claim rows, want one a customer", len(srcClaims))
	}

	file := filepath.Join(t.TempDir(), "log.ndjson.gz")
	errf, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	if err := runExport(context.Background(), []string{"-to", file}, func(k string) string { return srcEnv[k] }, nil, errf); err != nil {
		t.Fatal(err)
	}

	targets := []struct {
		name   string
		env    map[string]string
		millis bool
	}{
		{"sqlite", map[string]string{"ORDERD_DATA_DIR": t.TempDir(), "ORDERD_LOG_LEVEL": "warn"}, false},
		{"cassandra", scyllaEnv(t), true},
	}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			if tg.env["ORDERD_DATA_DIR"] == "" {
				tg.env["ORDERD_DATA_DIR"] = t.TempDir()
			}
			tg.env["ORDERD_LOG_LEVEL"] = "warn"
			// The data keys travel in the stream wrapped by the source's
			// key-encryption key: the target runs with the same one.
			tg.env["ORDERD_KEK_FILE"] = filepath.Join(srcDir, "kek")
			delete(tg.env, "ORDERD_KEK") // scyllaEnv's, which would win
			getenv := func(k string) string { return tg.env[k] }
			if err := runImport(context.Background(), []string{"-from", file}, getenv, nil, errf); err != nil {
				t.Fatal(err)
			}
			storetest.SameEvents(t, srcEvents, logEvents(t, tg.env), tg.millis)
			if got := logClaims(t, tg.env); !slices.Equal(got, srcClaims) {
				t.Fatalf("the target's e-mail claim rows:\n%s\nthe source's:\n%s", strings.Join(got, "\n"), strings.Join(srcClaims, "\n"))
			}

			dst := start(t, tg.env["ORDERD_DATA_DIR"], tg.env)
			got := answers(t, dst, reads)
			for _, r := range reads {
				w := want[r.path]
				if tg.millis {
					w, got[r.path] = toMillis(w), toMillis(got[r.path])
				}
				if got[r.path] != w {
					t.Fatalf("GET %s on the %s target:\n%s\nthe source answered\n%s", r.path, tg.name, got[r.path], w)
				}
			}
			checkTaken(t, dst.do(t, "POST", "/v1/customers", registerBody("Move0@example.com"), http.StatusConflict))
		})
	}
	out, _ := os.ReadFile(errf.Name())
	if !strings.Contains(string(out), "exported") || !strings.Contains(string(out), "imported") {
		t.Errorf("no progress on stderr:\n%s", out)
	}
}
