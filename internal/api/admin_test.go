package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd"
	"github.com/orderd/orderd/internal/api/apitest"
	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/store"
)

const adminToken = "s3cret-admin-token"

var (
	t0   = time.Date(2025, 3, 1, 9, 30, 0, 123456789, time.UTC)
	aggA = uuid.MustParse("0195a000-0000-7000-8000-00000000000a")
	aggB = uuid.MustParse("0195a000-0000-7000-8000-00000000000b")
)

// ledgerDLQ is DeadLetters on the real SQLite ledger, replaying as the relay
// does: an aggregate's letters in sequence order, each removed once
// published, stopping at the first that fails. publish decides each
// letter's fate, as the broker would.
type ledgerDLQ struct {
	ledger  *sqlite.Ledger
	events  map[int64]store.Event
	publish func(relay.DeadLetter) error
}

func (d *ledgerDLQ) List(ctx context.Context, after int64, limit int) ([]relay.DeadLetter, error) {
	return d.ledger.List(ctx, after, limit)
}

func (d *ledgerDLQ) Inspect(ctx context.Context, pos int64) (relay.DeadLetter, store.Event, error) {
	l, err := d.ledger.Get(ctx, pos)
	return l, d.events[pos], err
}

func (d *ledgerDLQ) Replay(ctx context.Context, pos int64) (int, error) {
	l, err := d.ledger.Get(ctx, pos)
	if err != nil {
		return 0, err
	}
	return d.release(ctx, l.AggregateID)
}

func (d *ledgerDLQ) Discard(ctx context.Context, pos int64) (int, error) {
	l, err := d.ledger.Get(ctx, pos)
	if err != nil {
		return 0, err
	}
	if err := d.ledger.Remove(ctx, pos); err != nil {
		return 0, err
	}
	return d.release(ctx, l.AggregateID)
}

func (d *ledgerDLQ) release(ctx context.Context, agg uuid.UUID) (int, error) {
	letters, err := d.ledger.OfAggregate(ctx, agg)
	if err != nil {
		return 0, err
	}
	for i, l := range letters {
		err := d.publish(l)
		switch {
		case errors.Is(err, relay.ErrPermanent):
			l.State, l.Error, l.Attempts, l.LastFailedAt = relay.Failed, err.Error(), l.Attempts+1, t0.Add(time.Hour)
			if err := d.ledger.Update(ctx, l); err != nil {
				return i, err
			}
			return i, fmt.Errorf("%w: %v", relay.ErrReplayFailed, err)
		case err != nil:
			return i, fmt.Errorf("%w: %v", relay.ErrBrokerUnavailable, err)
		}
		if err := d.ledger.Remove(ctx, l.Position); err != nil {
			return i, err
		}
	}
	return len(letters), nil
}

// admin is a server with the admin routes over a ledger holding: A's
// failed event at 3 with A's events 5 and 7 parked behind it, and B's
// failed event at 4.
type admin struct {
	base   string
	dlq    *ledgerDLQ
	router routers.Router
}

func newAdmin(t *testing.T, token string) *admin {
	t.Helper()
	ledger, err := sqlite.OpenLedger(filepath.Join(t.TempDir(), "relay.db"), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ledger.Close() })
	dlq := &ledgerDLQ{ledger: ledger, events: map[int64]store.Event{}, publish: func(relay.DeadLetter) error { return nil }}
	var letters []relay.DeadLetter
	for _, e := range []struct {
		pos   int64
		agg   uuid.UUID
		seq   int64
		state string
	}{{3, aggA, 1, relay.Failed}, {4, aggB, 1, relay.Failed}, {5, aggA, 2, relay.Parked}, {7, aggA, 3, relay.Parked}} {
		ev := store.Event{
			ID: uuid.Must(uuid.NewV7()), AggregateID: e.agg, AggregateType: "Order", Sequence: e.seq,
			Type: "OrderShipped", SchemaVersion: 1, Data: json.RawMessage(`{"tracking_number":"T-1","carrier":"DHL"}`),
			CausationID: uuid.Must(uuid.NewV7()), CorrelationID: uuid.Must(uuid.NewV7()), Timestamp: t0, Position: e.pos,
		}
		dlq.events[e.pos] = ev
		l := relay.DeadLetter{Position: e.pos, EventID: ev.ID, AggregateID: e.agg, AggregateType: "Order",
			Sequence: e.seq, EventType: ev.Type, Topic: "orderd.order", State: e.state, FirstFailedAt: t0, LastFailedAt: t0}
		if e.state == relay.Failed {
			l.Error, l.Attempts = "kafka: MESSAGE_TOO_LARGE", 1
		}
		letters = append(letters, l)
	}
	if err := ledger.Record(context.Background(), letters); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(nil, nil, nil, nil, orderd.OpenAPI, zap.NewNop()).WithAdmin(dlq, token).Handler())
	t.Cleanup(srv.Close)
	return &admin{base: srv.URL, dlq: dlq, router: apitest.Contract(t, srv.URL)}
}

// bearer is what the contract's security check asks of a request.
func bearer(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	scheme, token, _ := strings.Cut(in.RequestValidationInput.Request.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		return errors.New("no bearer token")
	}
	return nil
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
}

// call sends a request with the Authorization header auth (none if empty)
// and checks the answer against openapi.yaml. Tests send requests that the
// contract refuses too (no token, a malformed id); the server must not
// accept those.
func (a *admin) call(t *testing.T, method, path, auth string) answer {
	t.Helper()
	req, err := http.NewRequest(method, a.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	var in *openapi3filter.RequestValidationInput
	var refused error
	if route, params, err := a.router.FindRoute(req); err == nil {
		in = &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true, AuthenticationFunc: bearer}}
		refused = openapi3filter.ValidateRequest(context.Background(), in)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if in == nil {
		t.Fatalf("%s %s is not in openapi.yaml", method, path)
	}
	if refused != nil && resp.StatusCode < 400 {
		t.Fatalf("%s %s: %d for a request that breaks openapi.yaml: %v", method, path, resp.StatusCode, refused)
	}
	if err := openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Body: io.NopCloser(bytes.NewReader(raw)), Options: in.Options,
	}); err != nil {
		t.Fatalf("%s %s: %d answer breaks openapi.yaml: %v\n%s", method, path, resp.StatusCode, err, raw)
	}
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("%s %s: %v: %s", method, path, err, raw)
	}
	return answer{resp.StatusCode, resp.Header, body}
}

// ok calls with the admin token and expects status want (and, for a
// problem, code).
func (a *admin) ok(t *testing.T, method, path string, want int, code string) answer {
	t.Helper()
	got := a.call(t, method, path, "Bearer "+adminToken)
	if got.status != want || code != "" && got.body["code"] != code {
		t.Fatalf("%s %s = %d %v, want %d %s", method, path, got.status, got.body, want, code)
	}
	return got
}

func TestAdminNeedsAToken(t *testing.T) {
	a := newAdmin(t, "")
	a.ok(t, "GET", "/v1/admin/dlq", 404, "not_found")
	a.ok(t, "POST", "/v1/admin/dlq/3/replay", 404, "not_found")

	rec, req := httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/admin/dlq", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	New(nil, nil, nil, nil, nil, zap.NewNop()).WithAdmin(nil, adminToken).Handler().ServeHTTP(rec, req)
	if rec.Code != 404 {
		t.Errorf("with a token and no dead letters: %d, want 404", rec.Code)
	}
}

func TestAdminAuthorization(t *testing.T) {
	a := newAdmin(t, adminToken)
	for _, c := range []struct{ name, auth, challenge string }{
		{"no header", "", `Bearer realm="orderd-admin"`},
		{"another scheme", "Basic " + adminToken, `Bearer realm="orderd-admin"`},
		{"empty token", "Bearer ", `Bearer realm="orderd-admin"`},
		{"wrong token", "Bearer nope", `Bearer realm="orderd-admin", error="invalid_token"`},
		{"prefix", "Bearer " + adminToken[:5], `Bearer realm="orderd-admin", error="invalid_token"`},
		{"longer", "Bearer " + adminToken + "x", `Bearer realm="orderd-admin", error="invalid_token"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, path := range []string{"/v1/admin/dlq", "/v1/admin/dlq/999/replay"} {
				method := map[bool]string{true: "POST", false: "GET"}[strings.HasSuffix(path, "replay")]
				got := a.call(t, method, path, c.auth)
				if got.status != 401 || got.body["code"] != "unauthorized" || got.header.Get("WWW-Authenticate") != c.challenge {
					t.Errorf("%s %s: %d %v, WWW-Authenticate %q", method, path, got.status, got.body, got.header.Get("WWW-Authenticate"))
				}
			}
		})
	}
	a.ok(t, "GET", "/v1/admin/dlq", 200, "")
	if got := a.call(t, "GET", "/v1/admin/dlq", "bearer "+adminToken); got.status != 200 {
		t.Errorf("lower-case scheme: %d, want 200 (RFC 9110: schemes are case-insensitive)", got.status)
	}
	if len(a.dlq.events) != 4 {
		t.Fatal("a refused request changed something")
	}
}

func TestTokenMatches(t *testing.T) {
	want := sha256.Sum256([]byte(adminToken))
	for token, match := range map[string]bool{
		adminToken: true, "": false, adminToken[:1]: false, adminToken + " ": false, strings.ToUpper(adminToken): false,
	} {
		if got := tokenMatches(token, want); got != match {
			t.Errorf("tokenMatches(%q) = %v", token, got)
		}
	}
}

func ids(t *testing.T, body map[string]any) []int64 {
	t.Helper()
	out := []int64{}
	for _, l := range body["dead_letters"].([]any) {
		out = append(out, int64(l.(map[string]any)["id"].(float64)))
	}
	return out
}

func TestListDeadLetters(t *testing.T) {
	a := newAdmin(t, adminToken)
	all := a.ok(t, "GET", "/v1/admin/dlq", 200, "")
	if got := fmt.Sprint(ids(t, all.body)); got != "[3 4 5 7]" || all.body["next_after"] != nil {
		t.Errorf("default page: ids %s, next_after %v", got, all.body["next_after"])
	}
	first := all.body["dead_letters"].([]any)[0].(map[string]any)
	if first["state"] != "failed" || first["error"] != "kafka: MESSAGE_TOO_LARGE" || first["first_failed_at"] != "2025-03-01T09:30:00.123456789Z" {
		t.Errorf("first letter = %v", first)
	}
	if parked := all.body["dead_letters"].([]any)[2].(map[string]any); parked["error"] != nil {
		t.Errorf("a parked letter's error = %v, want null", parked["error"])
	}

	var pages []string
	for after := "0"; after != ""; {
		page := a.ok(t, "GET", "/v1/admin/dlq?limit=3&after="+after, 200, "")
		pages = append(pages, fmt.Sprint(ids(t, page.body)))
		after = ""
		if n, ok := page.body["next_after"].(float64); ok {
			after = fmt.Sprint(n)
		}
	}
	if got := strings.Join(pages, " "); got != "[3 4 5] [7]" {
		t.Errorf("pages of 3: %s", got)
	}
	for _, q := range []string{"limit=0", "limit=501", "limit=x", "after=-1", "after=3.5"} {
		got := a.ok(t, "GET", "/v1/admin/dlq?"+q, 400, "invalid_query")
		if field := strings.Split(q, "=")[0]; got.body["field"] != field {
			t.Errorf("%s: field %v, want %s", q, got.body["field"], field)
		}
	}
}

func TestGetDeadLetter(t *testing.T) {
	a := newAdmin(t, adminToken)
	got := a.ok(t, "GET", "/v1/admin/dlq/5", 200, "")
	letter, event := got.body["dead_letter"].(map[string]any), got.body["event"].(map[string]any)
	if letter["id"] != 5.0 || letter["state"] != "parked" || letter["aggregate_id"] != aggA.String() || letter["sequence"] != 2.0 {
		t.Errorf("dead_letter = %v", letter)
	}
	want := a.dlq.events[5]
	if event["event_id"] != want.ID.String() || event["event_type"] != "OrderShipped" || event["timestamp"] != "2025-03-01T09:30:00.123456789Z" ||
		event["data"].(map[string]any)["tracking_number"] != "T-1" || event["metadata"] == nil {
		t.Errorf("event = %v", event)
	}
	a.ok(t, "GET", "/v1/admin/dlq/6", 404, "dead_letter_not_found")
	for _, id := range []string{"abc", "0", "-3", "1e3", "99999999999999999999"} {
		if got := a.ok(t, "GET", "/v1/admin/dlq/"+id, 400, "invalid_id"); got.body["field"] != "id" {
			t.Errorf("id %s: field %v", id, got.body["field"])
		}
	}
}

func TestReplay(t *testing.T) {
	ctx := context.Background()
	a := newAdmin(t, adminToken)
	a.dlq.publish = func(l relay.DeadLetter) error {
		if l.Position == 5 {
			return fmt.Errorf("kafka: INVALID_RECORD: %w", relay.ErrPermanent)
		}
		return nil
	}
	// 3 goes out, then 5 fails again and stays, and 7 stays parked behind it.
	got := a.ok(t, "POST", "/v1/admin/dlq/3/replay", 409, "replay_failed")
	if d := got.body["detail"].(string); !strings.Contains(d, "INVALID_RECORD") || !strings.HasPrefix(d, "1 event(s) published") {
		t.Errorf("detail %q: want the broker's error and the count", d)
	}
	l, err := a.dlq.ledger.Get(ctx, 5)
	if err != nil || l.State != relay.Failed || l.Attempts != 1 || !strings.Contains(l.Error, "INVALID_RECORD") {
		t.Errorf("letter 5 after the failed replay: %+v, %v", l, err)
	}
	a.ok(t, "GET", "/v1/admin/dlq/3", 404, "dead_letter_not_found")

	a.dlq.publish = func(relay.DeadLetter) error { return errors.New("dial tcp: connection refused") }
	got = a.ok(t, "POST", "/v1/admin/dlq/5/replay", 503, "broker_unavailable")
	if got.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}

	a.dlq.publish = func(relay.DeadLetter) error { return nil }
	if got := a.ok(t, "POST", "/v1/admin/dlq/5/replay", 200, ""); got.body["published"] != 2.0 {
		t.Errorf("replay = %v, want 2 published", got.body)
	}
	if got := fmt.Sprint(ids(t, a.ok(t, "GET", "/v1/admin/dlq", 200, "").body)); got != "[4]" {
		t.Errorf("left after the replay: %s, want [4]", got)
	}
	a.ok(t, "POST", "/v1/admin/dlq/5/replay", 404, "dead_letter_not_found")
	a.ok(t, "POST", "/v1/admin/dlq/x/replay", 400, "invalid_id")
}

func TestDiscard(t *testing.T) {
	a := newAdmin(t, adminToken)
	var published []int64
	a.dlq.publish = func(l relay.DeadLetter) error { published = append(published, l.Position); return nil }
	if got := a.ok(t, "DELETE", "/v1/admin/dlq/3", 200, ""); got.body["published"] != 2.0 {
		t.Errorf("discard = %v, want 2 published", got.body)
	}
	if fmt.Sprint(published) != "[5 7]" {
		t.Errorf("published %v, want the parked [5 7] and not the discarded 3", published)
	}
	if got := a.ok(t, "DELETE", "/v1/admin/dlq/4", 200, ""); got.body["published"] != 0.0 {
		t.Errorf("discard of a letter with nothing parked = %v", got.body)
	}
	a.ok(t, "DELETE", "/v1/admin/dlq/4", 404, "dead_letter_not_found")
	if got := fmt.Sprint(ids(t, a.ok(t, "GET", "/v1/admin/dlq", 200, "").body)); got != "[]" {
		t.Errorf("left: %s", got)
	}
}
