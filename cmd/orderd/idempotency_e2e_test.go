package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/store"
)

// sqliteTime is the layout the SQLite engine writes its times in (the
// text columns of keys.db among them), for a test that writes one by hand.
const sqliteTime = "2006-01-02T15:04:05.000000000Z07:00"

// keyedCall sends a command with an Idempotency-Key, checked against
// openapi.yaml.
func (s *service) keyedCall(t testing.TB, method, path, key string, body any) response {
	t.Helper()
	return s.call(t, method, path, body, map[string]string{"Idempotency-Key": key}, true)
}

// sameAnswer fails unless again replays first: status, body, ETag and
// Location byte for byte, marked Idempotent-Replayed.
func sameAnswer(t testing.TB, first, again response) {
	t.Helper()
	if again.Status != first.Status || !bytes.Equal(again.Body, first.Body) {
		t.Fatalf("replay %d %s; first %d %s", again.Status, again.Body, first.Status, first.Body)
	}
	for _, h := range []string{"ETag", "Location", "Content-Type"} {
		if again.Header.Get(h) != first.Header.Get(h) {
			t.Fatalf("replay %s %q; first %q", h, again.Header.Get(h), first.Header.Get(h))
		}
	}
	if again.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("a replay without Idempotent-Replayed: true: %v", again.Header)
	}
}

// keyedRuns counts the executions stored under key: the distinct records
// of the events that carry it.
func keyedRuns(t testing.TB, s *service, key string) int64 {
	t.Helper()
	return scalar(t, s.eventsDB(), fmt.Sprintf(`SELECT count(DISTINCT json_extract(metadata, '$.idempotency_record'))
		FROM events WHERE json_extract(metadata, '$.idempotency_key') = '%s'`, key))
}

func orderRequest(id, customer uuid.UUID) map[string]any {
	return map[string]any{"id": id, "customer_id": customer, "items": []itemBody{{uuid.NewString(), 2}}}
}

// TestIdempotencyRacingRetries: 32 concurrent requests with one key run
// the command once; every answer is the first one. (A 409 in flight would
// be allowed only if the first took longer than the 2 s wait; on loopback
// it never does, so none is accepted here.)
func TestIdempotencyRacingRetries(t *testing.T) {
	s := start(t, "", nil)
	cust := s.registerCustomer(t, "racing-keys@example.com")
	body := map[string]any{"customer_id": cust.ID, "items": []itemBody{{uuid.NewString(), 1}}}
	const n = 32
	answers := make([]response, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { answers[i] = s.keyedCall(t, "POST", "/v1/orders", "racing-retries", body) })
	}
	wg.Wait()
	var first *response
	for i, a := range answers {
		if a.Header.Get("Idempotent-Replayed") == "" {
			if first != nil {
				t.Fatalf("two requests ran: %s and %s", first.Body, a.Body)
			}
			first = &answers[i]
		}
	}
	if first == nil || first.Status != http.StatusCreated {
		t.Fatalf("no request ran: %+v", answers[0])
	}
	for _, a := range answers {
		if a.Header.Get("Idempotent-Replayed") != "" {
			sameAnswer(t, *first, a)
		}
	}
	if runs := keyedRuns(t, s, "racing-retries"); runs != 1 {
		t.Fatalf("%d executions stored under the key, want 1", runs)
	}
	if n := scalar(t, s.eventsDB(), `SELECT count(*) FROM events WHERE event_type = 'OrderCreated'`); n != 1 {
		t.Fatalf("%d orders created, want 1", n)
	}
}

// TestIdempotencyKeyReuse: the key with another body is refused, and
// still replays its first answer.
func TestIdempotencyKeyReuse(t *testing.T) {
	s := start(t, "", nil)
	cust := s.registerCustomer(t, "reuse-keys@example.com")
	first := s.keyedCall(t, "POST", "/v1/orders", "reused", orderRequest(uuid.New(), cust.ID))
	if first.Status != http.StatusCreated {
		t.Fatalf("first: %d %s", first.Status, first.Body)
	}
	other := s.keyedCall(t, "POST", "/v1/orders", "reused", orderRequest(uuid.New(), cust.ID))
	if other.Status != http.StatusUnprocessableEntity || other.problem(t).Code != "idempotency_key_reused" {
		t.Fatalf("the key with another body: %d %s", other.Status, other.Body)
	}
	if runs := keyedRuns(t, s, "reused"); runs != 1 {
		t.Fatalf("%d executions under the key, want 1", runs)
	}
}

// TestIdempotencyRestart: a retry after a clean restart replays the
// answer the first request got before it.
func TestIdempotencyRestart(t *testing.T) {
	dir := t.TempDir()
	s1 := start(t, dir, nil)
	cust := s1.registerCustomer(t, "restart-keys@example.com")
	req := orderRequest(uuid.New(), cust.ID)
	first := s1.keyedCall(t, "POST", "/v1/orders", "across-restart", req)
	confirm := s1.keyedCall(t, "POST", "/v1/orders/"+req["id"].(uuid.UUID).String()+"/confirm", "confirm-once", nil)
	if first.Status != http.StatusCreated || confirm.Status != http.StatusOK {
		t.Fatalf("first: %d %s; confirm %d %s", first.Status, first.Body, confirm.Status, confirm.Body)
	}
	if err := s1.stop(); err != nil {
		t.Fatal(err)
	}
	s2 := start(t, dir, nil)
	sameAnswer(t, first, s2.keyedCall(t, "POST", "/v1/orders", "across-restart", req))
	sameAnswer(t, confirm, s2.keyedCall(t, "POST", "/v1/orders/"+req["id"].(uuid.UUID).String()+"/confirm", "confirm-once", nil))
	if n := len(s2.events(t, "orders", req["id"].(uuid.UUID))); n != 2 {
		t.Fatalf("%d events of the order, want 2", n)
	}
}

// TestIdempotencyKill9: a command committed its events, then its process
// died (kill -9) before the answer was stored. The retry, on a new
// process, finds the record pending, settles it from the events (which
// carry the key's record id) and answers what the command answered, byte
// for byte, without running it again.
//
// The moment between the commit and the answer cannot be hit reliably
// with a signal, and needs not be: a command whose events are its answer
// stores no answer, so after the first request's answer the record is as
// it was at that moment (pending, naming the order), and the kill leaves
// it so.
func TestIdempotencyKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	p := startProcess(t, dir, nil)
	s := p.client(t, dir)
	cust := s.registerCustomer(t, "kill9-keys@example.com")
	req := orderRequest(uuid.New(), cust.ID)
	first := s.keyedCall(t, "POST", "/v1/orders", "kill-9", req)
	if first.Status != http.StatusCreated {
		t.Fatalf("first: %d %s", first.Status, first.Body)
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()

	keysDB := filepath.Join(dir, "keys.db")
	keys, err := sqlite.OpenKeys(keysDB, sqlite.KeysOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The command's events are its answer: the record was left pending,
	// naming the order, and the reopen abandoned it (its process died).
	rec, found, err := keys.Get(context.Background(), "kill-9")
	if err != nil || !found || rec.State == store.Done || rec.AggregateID != req["id"].(uuid.UUID) {
		t.Fatalf("the key's record: %+v, %v, %v; want one not done, naming the order", rec, found, err)
	}
	if err := keys.Close(); err != nil {
		t.Fatal(err)
	}

	p2 := startProcess(t, dir, nil)
	s2 := p2.client(t, dir)
	sameAnswer(t, first, s2.keyedCall(t, "POST", "/v1/orders", "kill-9", req))
	if runs := keyedRuns(t, s2, "kill-9"); runs != 1 {
		t.Fatalf("%d executions under the key, want 1", runs)
	}
	sameAnswer(t, first, s2.keyedCall(t, "POST", "/v1/orders", "kill-9", req)) // now from the record
}

// TestIdempotencyKill9InFlight: orderd is killed (SIGKILL) while a keyed
// command is in flight: its record is pending and attached to the order,
// its append waits for the event store's write lock, which the test
// holds. After the restart the retry settles at once (the events do not
// carry the record: it runs the command, once), where it used to answer
// 409 idempotency_key_in_flight until the record looked dead, 30 s later.
func TestIdempotencyKill9InFlight(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	p := startProcess(t, dir, nil)
	s := p.client(t, dir)
	cust := s.registerCustomer(t, "kill9-in-flight@example.com")
	req := orderRequest(uuid.New(), cust.ID)

	// Hold the event store's write lock: the command attaches its key,
	// then waits in its append (for up to the store's 5 s busy timeout).
	db, err := sql.Open("sqlite", "file:"+s.eventsDB()+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	lock, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.ExecContext(t.Context(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(req)
	go func() {
		r, _ := http.NewRequest("POST", p.base+"/v1/orders", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Idempotency-Key", "in-flight")
		if resp, err := http.DefaultClient.Do(r); err == nil { // the kill ends it
			resp.Body.Close()
		}
	}()
	keysDB := filepath.Join(dir, "keys.db")
	for deadline := time.Now().Add(4 * time.Second); scalar(t, keysDB, `SELECT count(*) FROM idempotency_keys
		WHERE key = 'in-flight' AND state = 'pending' AND aggregate_id IS NOT NULL`) != 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the keyed command did not reach its append within 4 s")
		}
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	if _, err := lock.ExecContext(t.Context(), "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	_ = lock.Close()

	p2 := startProcess(t, dir, nil)
	s2 := p2.client(t, dir)
	start := time.Now()
	first := s2.keyedCall(t, "POST", "/v1/orders", "in-flight", req)
	took := time.Since(start)
	if first.Status != http.StatusCreated || first.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("the retry after the restart: %d %s in %v; want 201, run at once", first.Status, first.Body, took)
	}
	if took > time.Second {
		t.Errorf("the retry took %v: it waited for the dead attempt", took)
	}
	if runs := keyedRuns(t, s2, "in-flight"); runs != 1 {
		t.Fatalf("%d executions under the key, want 1", runs)
	}
	sameAnswer(t, first, s2.keyedCall(t, "POST", "/v1/orders", "in-flight", req))
}

// TestIdempotencyExpiry: after the retention the key is free (a new
// request with it runs), and the purge deletes expired records.
func TestIdempotencyExpiry(t *testing.T) {
	s := start(t, "", map[string]string{"ORDERD_IDEMPOTENCY_TTL": "1s"})
	first := s.keyedCall(t, "POST", "/v1/customers", "short-lived", customerRequest("expiry-1@example.com"))
	gone := s.keyedCall(t, "POST", "/v1/customers", "purged", customerRequest("expiry-2@example.com"))
	if first.Status != http.StatusCreated || gone.Status != http.StatusCreated {
		t.Fatalf("first: %d %s; %d %s", first.Status, first.Body, gone.Status, gone.Body)
	}
	time.Sleep(1500 * time.Millisecond)
	again := s.keyedCall(t, "POST", "/v1/customers", "short-lived", customerRequest("expiry-3@example.com"))
	if again.Status != http.StatusCreated || again.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("the expired key with another body: %d %s; want it to run", again.Status, again.Body)
	}
	keysDB := filepath.Join(s.dataDir, "keys.db")
	deadline := time.Now().Add(30 * time.Second)
	for scalar(t, keysDB, `SELECT count(*) FROM idempotency_keys WHERE key = 'purged'`) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the expired record was not purged within 30s")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func customerRequest(email string) map[string]any {
	return map[string]any{"email": email, "first_name": "Ada", "last_name": "Lovelace", "phone": "+15550123"}
}

// BenchmarkIdempotencyKey is BenchmarkCreateOrder with and without an
// Idempotency-Key on every request: 64 concurrent clients, throughput and
// p50/p99 command latency.
func BenchmarkIdempotencyKey(b *testing.B) {
	for _, keyed := range []bool{false, true} {
		name := "unkeyed"
		if keyed {
			name = "keyed"
		}
		b.Run(name, func(b *testing.B) {
			benchCreate(b, start(b, "", map[string]string{"ORDERD_LOG_LEVEL": "error"}), keyed)
		})
	}
}

// benchCreate is BenchmarkCreateOrder's load on s: 64 concurrent clients
// sending CreateOrder (with an Idempotency-Key each when keyed), reporting
// commands/s and the latency percentiles. It returns how many commands it
// sent (and the customer registered first).
func benchCreate(b *testing.B, s *service, keyed bool) int {
	cust := s.registerCustomer(b, "bench-"+uuid.NewString()+"@example.com").ID
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 128}}
	defer client.CloseIdleConnections()
	return parallelLoad(b, "cmds", func(int) (time.Duration, error) {
		body := fmt.Sprintf(`{"customer_id":%q,"items":[{"product_id":%q,"quantity":2}]}`, cust, uuid.NewString())
		req, _ := http.NewRequest(http.MethodPost, s.base+"/v1/orders", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if keyed {
			req.Header.Set("Idempotency-Key", uuid.NewString())
		}
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return 0, fmt.Errorf("POST /v1/orders: %d", resp.StatusCode)
		}
		return time.Since(t0), nil
	})
}
