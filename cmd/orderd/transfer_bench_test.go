package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/orderd/orderd/internal/store/storetest"
)

// BenchmarkMoveToCassandra is issue 19's measurement of a move at scale: a
// SQLite deployment populated through the API with ORDERD_BENCH_MOVE_EVENTS
// events (default 20,000; the figure is 1,000,000), customers and
// orders at every stage of their lifecycle, moved to a fresh Cassandra
// keyspace with orderd export and orderd import. Every aggregate's events
// on the target are the source's, and a real orderd on the target, its
// read models projected from the imported events, answers every GET as the
// source did (each order and its history, each customer, its history and
// its orders; timestamps to the millisecond, what CQL keeps). It reports
// the rates of both steps and of the target's projection:
//
//	ORDERD_BENCH_MOVE_EVENTS=1000000 go test -run '^$' -bench MoveToCassandra \
//	  -benchtime 1x -timeout 3h ./cmd/orderd
func BenchmarkMoveToCassandra(b *testing.B) {
	events := benchCount(b, "ORDERD_BENCH_MOVE_EVENTS", 20000, 1000)
	for b.Loop() {
		moveOnce(b, events)
	}
}

func moveOnce(b *testing.B, events int) {
	srcDir := b.TempDir()
	src := start(b, srcDir, nil)
	t0 := time.Now()
	reads := populateAtScale(b, src, events)
	populated := time.Since(t0)
	stored := scalar(b, src.eventsDB(), `SELECT count(*) FROM events`)
	b.Logf("source: %d events written through the API in %s (%.0f events/s), %d reads to compare",
		stored, populated.Round(time.Second), float64(stored)/populated.Seconds(), len(reads))
	want, _ := readAll(b, src, reads)
	if err := src.stop(); err != nil {
		b.Fatal(err)
	}

	srcEnv := map[string]string{"ORDERD_DATA_DIR": srcDir, "ORDERD_LOG_LEVEL": "warn"}
	file := filepath.Join(b.TempDir(), "log.ndjson.gz")
	errf, err := os.Create(filepath.Join(b.TempDir(), "stderr"))
	if err != nil {
		b.Fatal(err)
	}
	defer errf.Close()
	t0 = time.Now()
	if err := runExport(context.Background(), []string{"-to", file}, func(k string) string { return srcEnv[k] }, nil, errf); err != nil {
		b.Fatal(err)
	}
	exported := time.Since(t0)
	fi, err := os.Stat(file)
	if err != nil {
		b.Fatal(err)
	}

	dstEnv := scyllaEnv(b)
	dstEnv["ORDERD_LOG_LEVEL"] = "warn"
	dstEnv["ORDERD_KEK_FILE"] = filepath.Join(srcDir, "kek") // the data keys travel wrapped by it
	delete(dstEnv, "ORDERD_KEK")
	t0 = time.Now()
	if err := runImport(context.Background(), []string{"-from", file}, func(k string) string { return dstEnv[k] }, nil, errf); err != nil {
		b.Fatal(err)
	}
	imported := time.Since(t0)
	b.Logf("export: %s (%.0f events/s, %.0f bytes an event compressed); import into Cassandra: %s (%.0f events/s)",
		exported.Round(time.Millisecond), float64(stored)/exported.Seconds(), float64(fi.Size())/float64(stored),
		imported.Round(time.Second), float64(stored)/imported.Seconds())

	t0 = time.Now()
	storetest.SameEvents(b, logEvents(b, srcEnv), logEvents(b, dstEnv), true)
	b.Logf("every aggregate's events are the source's (compared in %s)", time.Since(t0).Round(time.Second))

	t0 = time.Now()
	dst := start(b, b.TempDir(), dstEnv)
	got, projected := readAll(b, dst, reads)
	b.Logf("target: read models projected from the imported events in %s (%.0f events/s); every read in %s",
		projected.Round(time.Second), float64(stored)/projected.Seconds(), time.Since(t0).Round(time.Second))
	for _, r := range reads {
		if got[r.path] != want[r.path] {
			b.Fatalf("GET %s answers otherwise on the target:\n%s", r.path, dst.get(r.path))
		}
	}
	b.Logf("%d GETs answer on the target as on the source", len(reads))
	b.ReportMetric(float64(stored), "events")
	b.ReportMetric(float64(stored)/exported.Seconds(), "export-events/s")
	b.ReportMetric(float64(stored)/imported.Seconds(), "import-events/s")
	b.ReportMetric(float64(stored)/projected.Seconds(), "target-projection-events/s")
}

// populateAtScale writes about events events through s's API, 32 clients
// at once: customers (a third change their phone, a seventh their e-mail
// address) and orders stopped at every stage of their lifecycle, those
// not yet confirmed cancelled, then as many more creations as make the
// log exactly events long. It returns every read to compare: versioned
// reads first, then those of the histories and lists.
func populateAtScale(b *testing.B, s *service, events int) []transferRead {
	b.Helper()
	const clients = 32
	custs := make([]transferRead, max(10, events/50))
	ids := make([]uuid.UUID, len(custs))
	each(b, len(custs), clients, func(i int) error {
		r, err := s.send("POST", "/v1/customers", map[string]any{
			"email": fmt.Sprintf("move%d@example.com", i), "first_name": "John", "last_name": fmt.Sprintf("Doe %d", i), "phone": "+15550123",
		}, http.StatusCreated)
		if err != nil {
			return err
		}
		ids[i] = r.ID
		base := "/v1/customers/" + r.ID.String()
		if i%3 == 0 {
			if r, err = s.send("POST", base+"/phone", map[string]any{"phone": fmt.Sprintf("+1555%07d", i)}, http.StatusOK); err != nil {
				return err
			}
		}
		if i%7 == 0 {
			if r, err = s.send("POST", base+"/email", map[string]any{"email": fmt.Sprintf("moved%d@example.com", i)}, http.StatusOK); err != nil {
				return err
			}
		}
		custs[i] = transferRead{base, r.Version}
		return nil
	})
	// Order i stops at stage i%5 (created … delivered) and is cancelled
	// when that is before its confirmation: 3.4 events an order.
	inCustomers := scalar(b, s.eventsDB(), `SELECT count(*) FROM events`)
	orders := max(1, int((float64(events)-float64(inCustomers))/3.4))
	orderReads := make([]transferRead, orders)
	each(b, orders, clients, func(i int) error {
		r, err := s.send("POST", "/v1/orders", map[string]any{"customer_id": ids[i%len(ids)],
			"items": []itemBody{{uuid.NewString(), 1 + i%3}}}, http.StatusCreated)
		if err != nil {
			return err
		}
		base := "/v1/orders/" + r.ID.String()
		n := i % 5
		for _, st := range orderSteps(i)[:n] {
			if r, err = s.send(st.method, base+st.path, st.body, http.StatusOK); err != nil {
				return err
			}
		}
		if n < 2 {
			if r, err = s.send("POST", base+"/cancel", map[string]any{"reason": "moved"}, http.StatusOK); err != nil {
				return err
			}
		}
		orderReads[i] = transferRead{base, r.Version}
		return nil
	})
	// Top the log up to exactly events with creations (one event each).
	if more := int64(events) - scalar(b, s.eventsDB(), `SELECT count(*) FROM events`); more > 0 {
		extra := make([]transferRead, more)
		each(b, int(more), clients, func(i int) error {
			r, err := s.send("POST", "/v1/orders", map[string]any{"customer_id": ids[i%len(ids)],
				"items": []itemBody{{uuid.NewString(), 1}}}, http.StatusCreated)
			extra[i] = transferRead{"/v1/orders/" + r.ID.String(), r.Version}
			return err
		})
		orderReads = append(orderReads, extra...)
	}
	reads := append(custs, orderReads...)
	n := len(reads)
	for _, r := range reads[:n] {
		reads = append(reads, transferRead{r.path + "/events", 0})
	}
	for _, id := range ids {
		reads = append(reads, transferRead{"/v1/customers/" + id.String() + "/orders", 0})
	}
	return reads
}

// readAll GETs every read on s, clients at once, and returns a digest of
// each answer with its timestamps to the millisecond. The versioned reads
// come first and are retried while the read models are behind (503), so
// that the others run once the projector has handled every event; took is
// how long the versioned ones took.
func readAll(b *testing.B, s *service, reads []transferRead) (digests map[string][32]byte, took time.Duration) {
	b.Helper()
	digests = make(map[string][32]byte, len(reads))
	var mu sync.Mutex
	versioned := 0
	for versioned < len(reads) && reads[versioned].version > 0 {
		versioned++
	}
	read := func(r transferRead) error {
		path := r.path
		if r.version > 0 {
			path += fmt.Sprintf("?min_version=%d", r.version)
		}
		deadline := time.Now().Add(2 * time.Hour)
		for {
			body, status, err := s.raw("GET", path, nil)
			if err != nil {
				return err
			}
			if status == http.StatusServiceUnavailable && r.version > 0 && time.Now().Before(deadline) {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			if status != http.StatusOK {
				return fmt.Errorf("GET %s: %d %s", path, status, body)
			}
			d := sha256.Sum256([]byte(toMillis(string(body))))
			mu.Lock()
			digests[r.path] = d
			mu.Unlock()
			return nil
		}
	}
	t0 := time.Now()
	each(b, versioned, 32, func(i int) error { return read(reads[i]) })
	took = time.Since(t0)
	rest := reads[versioned:]
	each(b, len(rest), 32, func(i int) error { return read(rest[i]) })
	return digests, took
}

// each runs f(0) … f(n-1) on clients goroutines and fails b with the
// first error.
func each(b *testing.B, n, clients int, f func(i int) error) {
	b.Helper()
	var next atomic.Int64
	var g errgroup.Group
	for range clients {
		g.Go(func() error {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := f(i); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
}

// send is a command from a load that validates nothing against the
// contract (the e2e tests do): its result, or an error unless the status
// is want.
func (s *service) send(method, path string, body any, want int) (commandResult, error) {
	var res commandResult
	raw, err := json.Marshal(body)
	if err != nil {
		return res, err
	}
	if body == nil {
		raw = nil
	}
	got, status, err := s.raw(method, path, raw)
	if err != nil {
		return res, err
	}
	if status != want {
		return res, fmt.Errorf("%s %s: %d, want %d: %s", method, path, status, want, got)
	}
	return res, json.Unmarshal(got, &res)
}

// raw sends a request without checks and returns the answer's body.
func (s *service) raw(method, path string, body []byte) ([]byte, int, error) {
	req, err := http.NewRequest(method, s.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	return got, resp.StatusCode, err
}

// get is a GET's body, for a failure message.
func (s *service) get(path string) string {
	body, status, err := s.raw("GET", path, nil)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%d %s", status, body)
}
