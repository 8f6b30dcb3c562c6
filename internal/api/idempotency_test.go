package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd"
	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/store"
)

// keyed is a real API on a SQLite store in a temporary directory, behind
// the idempotency middleware.
type keyed struct {
	base   string
	events *sqlite.Store
	keys   *sqlite.Keys
	m      *Idempotency
}

func newKeyed(t *testing.T, next func(*Server) http.Handler, opts IdempotencyOptions) *keyed {
	t.Helper()
	dir := t.TempDir()
	events, err := sqlite.OpenStore(filepath.Join(dir, "events.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := sqlite.OpenKeys(filepath.Join(dir, "keys.db"), sqlite.KeysOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = keys.Close(); _ = events.Close() })
	srv := New(aggregate.NewHandler(events, time.Now, aggregate.WithEmailClaims(events.EmailClaims())), nil, events, nil, orderd.OpenAPI, zap.NewNop())
	m := NewIdempotency(keys, events, opts)
	// The API's own routes run the middleware inside their route, as
	// WithIdempotency puts it (it reads the route's {id}); a test's
	// handler is wrapped whole.
	var h http.Handler
	if next != nil {
		h = m.Middleware(next(srv))
	} else {
		h = srv.WithIdempotency(m).Handler()
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return &keyed{base: ts.URL, events: events, keys: keys, m: m}
}

type keyedAnswer struct {
	status int
	header http.Header
	body   []byte
}

func (k *keyed) post(t *testing.T, path, key, body string) keyedAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, k.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return keyedAnswer{resp.StatusCode, resp.Header, b}
}

func (a keyedAnswer) code(t *testing.T) string {
	t.Helper()
	var p struct{ Code string }
	if err := json.Unmarshal(a.body, &p); err != nil {
		t.Fatalf("not a problem: %s", a.body)
	}
	return p.Code
}

// sameAnswer fails unless b is a replay of a: status, body and the stored
// headers byte for byte, marked replayed.
func sameAnswer(t *testing.T, a, b keyedAnswer) {
	t.Helper()
	if b.status != a.status || !bytes.Equal(b.body, a.body) {
		t.Fatalf("replay %d %s, first %d %s", b.status, b.body, a.status, a.body)
	}
	for _, h := range storedHeaders {
		if b.header.Get(h) != a.header.Get(h) {
			t.Fatalf("replay %s %q, first %q", h, b.header.Get(h), a.header.Get(h))
		}
	}
	if b.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("a replay without Idempotent-Replayed: true")
	}
}

func customerBody(email string) string {
	return fmt.Sprintf(`{"email":%q,"first_name":"Ada","last_name":"Lovelace","phone":"+15550123"}`, email)
}

func commandID(t *testing.T, a keyedAnswer) uuid.UUID {
	t.Helper()
	var res commandResult
	if err := json.Unmarshal(a.body, &res); err != nil {
		t.Fatalf("%d %s: %v", a.status, a.body, err)
	}
	return res.ID
}

// TestIdempotencyReplay: a retry gets the first answer, success or
// refusal, byte for byte, and runs nothing; without a key nothing changes.
func TestIdempotencyReplay(t *testing.T) {
	k := newKeyed(t, nil, IdempotencyOptions{})
	first := k.post(t, "/v1/customers", "k-1", customerBody("ada@example.com"))
	if first.status != http.StatusCreated || first.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first: %d %v %s", first.status, first.header, first.body)
	}
	again := k.post(t, "/v1/customers", "k-1", customerBody("ada@example.com"))
	sameAnswer(t, first, again)
	evs, err := k.events.Load(t.Context(), commandID(t, first), 0)
	if err != nil || len(evs) != 1 {
		t.Fatalf("%d events after a retry (%v), want 1", len(evs), err)
	}
	// Its events are its answer: the record names the customer and keeps
	// no answer of its own.
	if rec, _, _ := k.keys.Get(t.Context(), "k-1"); rec.State != store.Pending || rec.AggregateID != commandID(t, first) || rec.Response.Status != 0 {
		t.Fatalf("the record of a command that appended: %s on %s, answer %d; want pending on %s, none stored",
			rec.State, rec.AggregateID, rec.Response.Status, commandID(t, first))
	}
	// A command that changes nothing appends nothing: its answer is stored.
	phone := k.post(t, "/v1/customers/"+commandID(t, first).String()+"/phone", "k-3", `{"phone":"+15550123"}`)
	if phone.status != http.StatusOK {
		t.Fatalf("the same phone again: %d %s", phone.status, phone.body)
	}
	sameAnswer(t, phone, k.post(t, "/v1/customers/"+commandID(t, first).String()+"/phone", "k-3", `{"phone":"+15550123"}`))
	if rec, _, _ := k.keys.Get(t.Context(), "k-3"); rec.State != store.Done || rec.Response.Status != http.StatusOK {
		t.Fatalf("the record of a no-op: %s, answer %d; want done with 200", rec.State, rec.Response.Status)
	}

	order := fmt.Sprintf(`{"customer_id":%q,"items":[{"product_id":%q,"quantity":0}]}`, uuid.New(), uuid.New())
	refused := k.post(t, "/v1/orders", "k-2", order)
	if refused.status < 400 || refused.status >= 500 {
		t.Fatalf("order with quantity 0: %d %s, want a 4xx", refused.status, refused.body)
	}
	sameAnswer(t, refused, k.post(t, "/v1/orders", "k-2", order))
	if rec, _, _ := k.keys.Get(t.Context(), "k-2"); rec.State != store.Done || rec.Response.Status != refused.status {
		t.Fatalf("the record of a refusal: %s, answer %d; want done with %d", rec.State, rec.Response.Status, refused.status)
	}

	plain := k.post(t, "/v1/customers", "", customerBody("plain@example.com"))
	if plain.status != http.StatusCreated || plain.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("without a key: %d %s", plain.status, plain.body)
	}
}

// TestIdempotencyKeyReused: another request with a used key is refused,
// and the key still replays its first answer.
func TestIdempotencyKeyReused(t *testing.T) {
	k := newKeyed(t, nil, IdempotencyOptions{})
	first := k.post(t, "/v1/customers", "reuse", customerBody("one@example.com"))
	other := k.post(t, "/v1/customers", "reuse", customerBody("two@example.com"))
	if other.status != http.StatusUnprocessableEntity || other.code(t) != "idempotency_key_reused" {
		t.Fatalf("another body with the key: %d %s", other.status, other.body)
	}
	path := k.post(t, "/v1/orders", "reuse", customerBody("one@example.com"))
	if path.status != http.StatusUnprocessableEntity {
		t.Fatalf("another path with the key: %d %s", path.status, path.body)
	}
	sameAnswer(t, first, k.post(t, "/v1/customers", `"reuse"`, customerBody("one@example.com")))
}

// TestIdempotencyKeyInvalid: keys the middleware refuses.
func TestIdempotencyKeyInvalid(t *testing.T) {
	k := newKeyed(t, nil, IdempotencyOptions{})
	for name, key := range map[string]string{
		"empty":           "",
		"too long":        strings.Repeat("k", 256),
		"not ASCII":       "clé",
		"control":         "a\tb",
		"empty sf-string": `""`,
	} {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, k.base+"/v1/customers", strings.NewReader(customerBody("x@example.com")))
			req.Header["Idempotency-Key"] = []string{key}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			a := keyedAnswer{resp.StatusCode, resp.Header, b}
			if a.status != http.StatusBadRequest || a.code(t) != "invalid_idempotency_key" {
				t.Fatalf("%d %s", a.status, a.body)
			}
		})
	}
	if a := k.post(t, "/v1/customers", strings.Repeat("k", 255), customerBody("max@example.com")); a.status != http.StatusCreated {
		t.Fatalf("a 255-character key: %d %s", a.status, a.body)
	}
}

// TestIdempotencyConcurrent: 32 concurrent requests with one key run the
// command once, and every answer is the first.
func TestIdempotencyConcurrent(t *testing.T) {
	k := newKeyed(t, nil, IdempotencyOptions{})
	const n = 32
	answers := make([]keyedAnswer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { answers[i] = k.post(t, "/v1/customers", "race", customerBody("race@example.com")) })
	}
	wg.Wait()
	var first *keyedAnswer
	for i, a := range answers {
		if a.header.Get("Idempotent-Replayed") == "" {
			if first != nil {
				t.Fatalf("two answers were not replays: %s and %s", first.body, a.body)
			}
			first = &answers[i]
		}
	}
	if first == nil || first.status != http.StatusCreated {
		t.Fatalf("no first answer among %v", answers)
	}
	for _, a := range answers {
		if a.header.Get("Idempotent-Replayed") != "" {
			sameAnswer(t, *first, a)
		}
	}
	if evs, err := k.events.Load(t.Context(), commandID(t, *first), 0); err != nil || len(evs) != 1 {
		t.Fatalf("%d events (%v), want 1", len(evs), err)
	}
}

// TestIdempotencyInFlight: a retry while the first attempt runs waits for
// it, and gets 409 with Retry-After when it takes longer than the wait.
func TestIdempotencyInFlight(t *testing.T) {
	release := make(chan struct{})
	var runs atomic.Int32
	slow := func(*Server) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			runs.Add(1)
			<-release
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("ETag", `"7"`)
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, `{"ok":true}`)
		})
	}
	k := newKeyed(t, slow, IdempotencyOptions{Wait: 200 * time.Millisecond})
	firstDone := make(chan keyedAnswer)
	go func() { firstDone <- k.post(t, "/v1/orders/x/confirm", "slow", "") }()
	for runs.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	busy := k.post(t, "/v1/orders/x/confirm", "slow", "")
	if busy.status != http.StatusConflict || busy.code(t) != "idempotency_key_in_flight" || busy.header.Get("Retry-After") == "" {
		t.Fatalf("retry in flight: %d %v %s", busy.status, busy.header, busy.body)
	}
	waiting := make(chan keyedAnswer)
	go func() { waiting <- k.post(t, "/v1/orders/x/confirm", "slow", "") }()
	time.Sleep(50 * time.Millisecond)
	close(release)
	first := <-firstDone
	sameAnswer(t, first, <-waiting)
	if runs.Load() != 1 {
		t.Fatalf("%d runs, want 1", runs.Load())
	}
}

// TestIdempotencyFailureNotKept: a 5xx or a panic keeps nothing; the next
// retry runs again, and its answer is kept.
func TestIdempotencyFailureNotKept(t *testing.T) {
	var runs atomic.Int32
	flaky := func(s *Server) http.Handler {
		return s.handle(func(w http.ResponseWriter, r *http.Request) error {
			switch runs.Add(1) {
			case 1:
				return errors.New("disk on fire")
			case 2:
				panic("boom")
			}
			return writeCommandResult(w, http.StatusOK, uuid.Nil, 3)
		})
	}
	k := newKeyed(t, func(s *Server) http.Handler { return s.recoverPanics(flaky(s)) }, IdempotencyOptions{})
	if a := k.post(t, "/v1/orders/x/confirm", "flaky", ""); a.status != http.StatusInternalServerError {
		t.Fatalf("first: %d %s", a.status, a.body)
	}
	if a := k.post(t, "/v1/orders/x/confirm", "flaky", ""); a.status != http.StatusInternalServerError {
		t.Fatalf("second (panics): %d %s", a.status, a.body)
	}
	ok := k.post(t, "/v1/orders/x/confirm", "flaky", "")
	if ok.status != http.StatusOK || ok.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("third: %d %s", ok.status, ok.body)
	}
	sameAnswer(t, ok, k.post(t, "/v1/orders/x/confirm", "flaky", ""))
	if runs.Load() != 3 {
		t.Fatalf("%d runs, want 3", runs.Load())
	}
}

// TestIdempotencySettle: a pending record whose attempt died is settled by
// the next retry: at once from the events when they carry the record's id
// (the command committed: the answer is rebuilt as the command gave it),
// by running the command, after the takeover bound, when they do not.
func TestIdempotencySettle(t *testing.T) {
	var runs atomic.Int32
	counting := func(s *Server) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			runs.Add(1)
			_ = writeCommandResult(w, http.StatusOK, uuid.Nil, 1)
		})
	}
	const takeover = time.Second
	k := newKeyed(t, counting, IdempotencyOptions{Takeover: takeover, Wait: 100 * time.Millisecond})
	ctx := t.Context()
	forge := func(key, path, body string, agg uuid.UUID) store.IdempotencyRecord {
		t.Helper()
		now := time.Now().UTC()
		rec := store.IdempotencyRecord{Key: key, ID: uuid.Must(uuid.NewV7()), Fingerprint: fingerprint("POST", path, []byte(body)),
			Owner: uuid.New(), AggregateID: agg, Created: now, Updated: now, Expires: now.Add(time.Hour)}
		if _, began, err := k.keys.Begin(ctx, rec); err != nil || !began {
			t.Fatalf("Begin: %v %v", began, err)
		}
		return rec
	}
	// A create that committed two events, then died before its answer.
	agg := uuid.New()
	rec := forge("died", "/v1/widgets", `{}`, agg)
	evs := make([]store.Event, 2)
	for i := range evs {
		evs[i] = store.Event{ID: uuid.Must(uuid.NewV7()), AggregateID: agg, AggregateType: "Widget", Sequence: int64(i + 1),
			Type: "WidgetMade", SchemaVersion: 1, Data: json.RawMessage(`{}`), Timestamp: time.Now(),
			Metadata: map[string]string{metaIdempotencyKey: "died", metaIdempotencyRecord: rec.ID.String()}}
	}
	if err := k.events.Append(ctx, agg, 0, evs); err != nil {
		t.Fatal(err)
	}
	// The events are the answer: a retry replays it at once, before the
	// takeover bound, as the command gave it.
	settled := k.post(t, "/v1/widgets", "died", `{}`)
	want := fmt.Sprintf("{\"id\":%q,\"version\":2}\n", agg)
	if settled.status != http.StatusCreated || string(settled.body) != want || settled.header.Get("ETag") != `"2"` ||
		settled.header.Get("Location") != "/v1/widgets/"+agg.String() || settled.header.Get("Content-Type") != "application/json" {
		t.Fatalf("settled: %d %v %s; want 201 %s", settled.status, settled.header, settled.body, want)
	}
	sameAnswer(t, settled, k.post(t, "/v1/widgets", "died", `{}`))

	if settled.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("the answer of the events is not marked replayed: %v", settled.header)
	}
	time.Sleep(takeover)
	sameAnswer(t, settled, k.post(t, "/v1/widgets", "died", `{}`))

	// An attempt that died before its events committed: a live one for
	// all a retry knows until the takeover bound (409), then the retry
	// runs.
	forge("died early", "/v1/widgets", `{}`, uuid.New())
	if a := k.post(t, "/v1/widgets", "died early", `{}`); a.status != http.StatusConflict {
		t.Fatalf("before the takeover bound: %d %s, want 409", a.status, a.body)
	}
	time.Sleep(takeover)
	if a := k.post(t, "/v1/widgets", "died early", `{}`); a.status != http.StatusOK || a.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("settled by running: %d %s", a.status, a.body)
	}
	if runs.Load() != 1 {
		t.Fatalf("%d runs, want 1", runs.Load())
	}
}

// TestIdempotencyPreviousBoot: a record left pending by an earlier boot of
// this instance is settled by the next retry at once, long before the
// takeover bound: from the events when they carry the record's id, by
// running when they do not. A pending record of another instance, or of
// this very boot, is a live attempt for all this process knows: 409.
func TestIdempotencyPreviousBoot(t *testing.T) {
	var runs atomic.Int32
	counting := func(s *Server) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			runs.Add(1)
			_ = writeCommandResult(w, http.StatusOK, uuid.Nil, 1)
		})
	}
	k := newKeyed(t, counting, IdempotencyOptions{Takeover: time.Hour, Wait: 100 * time.Millisecond, Instance: "orderd-0"})
	ctx := t.Context()
	earlier := store.Process{Instance: "orderd-0", Boot: uuid.New()}
	forge := func(key string, by store.Process, agg uuid.UUID) store.IdempotencyRecord {
		t.Helper()
		now := time.Now().UTC()
		rec := store.IdempotencyRecord{Key: key, ID: uuid.Must(uuid.NewV7()), Fingerprint: fingerprint("POST", "/v1/widgets", []byte(`{}`)),
			Owner: uuid.New(), Process: by, AggregateID: agg, Created: now, Updated: now, Expires: now.Add(time.Hour)}
		if _, began, err := k.keys.Begin(ctx, rec); err != nil || !began {
			t.Fatalf("Begin: %v %v", began, err)
		}
		return rec
	}
	// Committed one event, then its process died before the answer.
	agg := uuid.New()
	rec := forge("committed", earlier, agg)
	if err := k.events.Append(ctx, agg, 0, []store.Event{{ID: uuid.Must(uuid.NewV7()), AggregateID: agg, AggregateType: "Widget",
		Sequence: 1, Type: "WidgetMade", SchemaVersion: 1, Data: json.RawMessage(`{}`), Timestamp: time.Now(),
		Metadata: map[string]string{metaIdempotencyKey: "committed", metaIdempotencyRecord: rec.ID.String()}}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	settled := k.post(t, "/v1/widgets", "committed", `{}`)
	if settled.status != http.StatusCreated || settled.header.Get("ETag") != `"1"` || time.Since(start) > time.Second {
		t.Fatalf("settled from the events: %d %s in %v; want 201 at once", settled.status, settled.body, time.Since(start))
	}
	sameAnswer(t, settled, k.post(t, "/v1/widgets", "committed", `{}`))
	// Answered from the events, which are the answer: the record is left
	// as it was, and every retry finds the events again.
	if got, _, _ := k.keys.Get(ctx, "committed"); got.State == store.Done || got.ID != rec.ID || got.AggregateID != agg {
		t.Fatalf("the settled record: %s, id %s on %s; want it left pending, id %s on %s", got.State, got.ID, got.AggregateID, rec.ID, agg)
	}

	// Died before its events: the retry runs the command.
	forge("died early", earlier, uuid.New())
	if a := k.post(t, "/v1/widgets", "died early", `{}`); a.status != http.StatusOK || a.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("settled by running: %d %s", a.status, a.body)
	}

	for name, by := range map[string]store.Process{
		"another instance": {Instance: "orderd-1", Boot: uuid.New()},
		"this boot":        k.m.process,
		"no instance":      {},
	} {
		forge(name, by, uuid.New())
		if a := k.post(t, "/v1/widgets", name, `{}`); a.status != http.StatusConflict || a.code(t) != "idempotency_key_in_flight" {
			t.Errorf("pending for %s: %d %s, want 409 idempotency_key_in_flight", name, a.status, a.body)
		}
	}
	if runs.Load() != 1 {
		t.Fatalf("%d runs, want 1", runs.Load())
	}
}

// TestFingerprintStable: a request's fingerprint is the SHA-256 of its
// method, path and body, one line each: records stored by an earlier
// build must still match their retries.
func TestFingerprintStable(t *testing.T) {
	body := []byte(`{"customer_id":"x","items":[]}`)
	want := sha256.Sum256([]byte("POST\n/v1/orders\n" + string(body)))
	if got := fingerprint("POST", "/v1/orders", body); !bytes.Equal(got, want[:]) {
		t.Fatalf("fingerprint %x, want %x", got, want)
	}
}
