package cli

import (
	"bytes"
	"context"
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
	"github.com/orderd/orderd/internal/api"
	"github.com/orderd/orderd/internal/api/apitest"
	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/store"
)

const dlqToken = "dlq-test-token"

// testDLQ is the admin API's DeadLetters on the real SQLite ledger. It
// replays as the relay does (an aggregate's letters in order, removing each
// once published, stopping at the first that fails); fail says which
// positions the broker refuses for good.
type testDLQ struct {
	ledger *sqlite.Ledger
	events map[int64]store.Event
	fail   map[int64]bool
}

func (d *testDLQ) List(ctx context.Context, after int64, limit int) ([]relay.DeadLetter, error) {
	return d.ledger.List(ctx, after, limit)
}

func (d *testDLQ) Inspect(ctx context.Context, pos int64) (relay.DeadLetter, store.Event, error) {
	l, err := d.ledger.Get(ctx, pos)
	return l, d.events[pos], err
}

func (d *testDLQ) Replay(ctx context.Context, pos int64) (int, error) {
	return d.release(ctx, pos, false)
}

func (d *testDLQ) Discard(ctx context.Context, pos int64) (int, error) {
	return d.release(ctx, pos, true)
}

func (d *testDLQ) release(ctx context.Context, pos int64, discard bool) (int, error) {
	l, err := d.ledger.Get(ctx, pos)
	if err != nil {
		return 0, err
	}
	if discard {
		if err := d.ledger.Remove(ctx, pos); err != nil {
			return 0, err
		}
	}
	letters, err := d.ledger.OfAggregate(ctx, l.AggregateID)
	if err != nil {
		return 0, err
	}
	for i, l := range letters {
		if d.fail[l.Position] {
			return i, fmt.Errorf("%w: kafka: MESSAGE_TOO_LARGE", relay.ErrReplayFailed)
		}
		if err := d.ledger.Remove(ctx, l.Position); err != nil {
			return i, err
		}
	}
	return len(letters), nil
}

// dlqServer serves the real admin handlers over a ledger holding A's failed
// event at 3 with A's event 5 parked behind it, and B's failed event at 4.
// Every request the CLI sends and every answer is checked against
// openapi.yaml. An empty token leaves the admin API off.
func dlqServer(t *testing.T, token string) (string, *testDLQ) {
	t.Helper()
	ledger, err := sqlite.OpenLedger(filepath.Join(t.TempDir(), "relay.db"), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ledger.Close() })
	dlq := &testDLQ{ledger: ledger, events: map[int64]store.Event{}, fail: map[int64]bool{}}
	at := time.Date(2025, 3, 1, 9, 30, 0, 0, time.UTC)
	aggA, aggB := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	var letters []relay.DeadLetter
	for _, e := range []struct {
		pos, seq int64
		agg      uuid.UUID
		state    string
	}{{3, 1, aggA, relay.Failed}, {4, 1, aggB, relay.Failed}, {5, 2, aggA, relay.Parked}} {
		ev := store.Event{ID: uuid.Must(uuid.NewV7()), AggregateID: e.agg, AggregateType: "Order", Sequence: e.seq,
			Type: "OrderConfirmed", SchemaVersion: 1, Data: json.RawMessage(`{"confirmed_at":"2025-03-01T09:30:00Z"}`),
			CausationID: uuid.Must(uuid.NewV7()), CorrelationID: uuid.Must(uuid.NewV7()), Timestamp: at, Position: e.pos}
		dlq.events[e.pos] = ev
		l := relay.DeadLetter{Position: e.pos, EventID: ev.ID, AggregateID: e.agg, AggregateType: "Order", Sequence: e.seq,
			EventType: ev.Type, Topic: "orderd.order", State: e.state, FirstFailedAt: at, LastFailedAt: at}
		if e.state == relay.Failed {
			l.Error, l.Attempts = "kafka: MESSAGE_TOO_LARGE: the record is larger than the broker's message.max.bytes", 1
		}
		letters = append(letters, l)
	}
	if err := ledger.Record(context.Background(), letters); err != nil {
		t.Fatal(err)
	}

	h := api.New(nil, nil, nil, nil, orderd.OpenAPI, zap.NewNop()).WithAdmin(dlq, token).Handler()
	var router routers.Router // set before the first request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serveChecked(t, router, h, w, r)
	}))
	t.Cleanup(srv.Close)
	router = apitest.Contract(t, srv.URL)
	return srv.URL, dlq
}

// serveChecked serves r with h and checks both against openapi.yaml. The
// CLI may send a request the contract refuses (without a token), but the
// server must not accept it.
func serveChecked(t *testing.T, router routers.Router, h http.Handler, w http.ResponseWriter, r *http.Request) {
	full := r.Clone(r.Context())
	full.URL.Scheme, full.URL.Host = "http", r.Host
	route, params, err := router.FindRoute(full)
	if err != nil {
		t.Errorf("%s %s is not in openapi.yaml: %v", r.Method, r.URL, err)
		return
	}
	in := &openapi3filter.RequestValidationInput{Request: full, PathParams: params, Route: route,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true,
			AuthenticationFunc: func(_ context.Context, a *openapi3filter.AuthenticationInput) error {
				if !strings.HasPrefix(a.RequestValidationInput.Request.Header.Get("Authorization"), "Bearer ") {
					return errors.New("no bearer token")
				}
				return nil
			}}}
	refused := openapi3filter.ValidateRequest(r.Context(), in)

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if refused != nil && rec.Code < 400 {
		t.Errorf("%s %s: %d for a request that breaks openapi.yaml: %v", r.Method, r.URL, rec.Code, refused)
	}
	if err := openapi3filter.ValidateResponse(r.Context(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: rec.Code, Header: rec.Header(),
		Body: io.NopCloser(bytes.NewReader(rec.Body.Bytes())), Options: in.Options,
	}); err != nil {
		t.Errorf("%s %s: %d answer breaks openapi.yaml: %v\n%s", r.Method, r.URL, rec.Code, err, rec.Body)
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// dlqRun runs the CLI with env as its environment.
func dlqRun(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = DLQ(context.Background(), args, func(k string) string { return env[k] }, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestDLQList(t *testing.T) {
	base, dlq := dlqServer(t, dlqToken)
	env := map[string]string{"ORDERD_ADMIN_URL": base, "ORDERD_ADMIN_TOKEN": dlqToken}
	out, errOut, err := dlqRun(t, env, "list")
	if err != nil {
		t.Fatalf("list: %v\n%s", err, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "ID  STATE ") {
		t.Fatalf("list printed:\n%s", out)
	}
	for i, want := range []string{"3 failed", "4 failed", "5 parked"} {
		if got := strings.Join(strings.Fields(lines[i+1])[:2], " "); got != want {
			t.Errorf("row %d = %q, want it to start with %q", i+1, lines[i+1], want)
		}
	}
	if row := lines[1]; !strings.Contains(row, dlq.events[3].AggregateID.String()) ||
		!strings.Contains(row, "2025-03-01 09:30:00") || !strings.HasSuffix(row, "…") || len([]rune(row)) > 200 {
		t.Errorf("row of 3 = %q: want the aggregate, the time and the error cut short", row)
	}
	if !strings.HasSuffix(lines[3], "-") {
		t.Errorf("a parked row shows an error: %q", lines[3])
	}

	// Flags after the command; a page that is not the last says how to go on.
	out, _, err = dlqRun(t, map[string]string{}, "list", "-limit", "1", "-after", "3", "-addr", base, "-token", dlqToken)
	if err != nil || strings.Fields(strings.Split(out, "\n")[1])[0] != "4" || !strings.HasSuffix(out, "more: orderd dlq list -after 4\n") {
		t.Errorf("list -limit 1 -after 3: %v\n%s", err, out)
	}
	if out, _, err = dlqRun(t, env, "list", "-after", "5"); err != nil || out != "no dead letters\n" {
		t.Errorf("list of nothing: %v %q", err, out)
	}
}

func TestDLQShow(t *testing.T) {
	base, dlq := dlqServer(t, dlqToken)
	out, errOut, err := dlqRun(t, map[string]string{"ORDERD_ADMIN_TOKEN": dlqToken}, "-addr", base, "show", "5")
	if err != nil {
		t.Fatalf("show: %v\n%s", err, errOut)
	}
	var got struct {
		DeadLetter struct{ ID int64 } `json:"dead_letter"`
		Event      struct {
			EventID string `json:"event_id"`
		} `json:"event"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.DeadLetter.ID != 5 || got.Event.EventID != dlq.events[5].ID.String() {
		t.Errorf("show printed %+v (%v):\n%s", got, err, out)
	}
	if !strings.HasPrefix(out, "{\n  \"dead_letter\": {\n    \"id\": 5,") {
		t.Errorf("show is not indented JSON:\n%s", out)
	}
}

func TestDLQReplayAndDiscard(t *testing.T) {
	base, dlq := dlqServer(t, dlqToken)
	env := map[string]string{"ORDERD_ADMIN_URL": base, "ORDERD_ADMIN_TOKEN": dlqToken}

	dlq.fail[5] = true
	_, errOut, err := dlqRun(t, env, "replay", "3")
	var p *problemError
	if !errors.As(err, &p) || p.Status != 409 || p.Code != "replay_failed" ||
		!strings.HasPrefix(errOut, "orderd dlq: 409 replay_failed: 1 event(s) published") || !strings.Contains(errOut, "MESSAGE_TOO_LARGE") {
		t.Errorf("failing replay: %v\n%s", err, errOut)
	}

	delete(dlq.fail, 5)
	if out, errOut, err := dlqRun(t, env, "replay", "5"); err != nil || out != "dead letter 5 replayed: 1 event(s) published\n" {
		t.Errorf("replay 5: %v %q %s", err, out, errOut)
	}
	if out, errOut, err := dlqRun(t, env, "discard", "4"); err != nil || out != "dead letter 4 discarded: 0 parked event(s) published\n" {
		t.Errorf("discard 4: %v %q %s", err, out, errOut)
	}
	if out, _, _ := dlqRun(t, env, "list"); out != "no dead letters\n" {
		t.Errorf("left after replay and discard:\n%s", out)
	}
}

func TestDLQProblems(t *testing.T) {
	base, _ := dlqServer(t, dlqToken)
	off, _ := dlqServer(t, "")
	env := map[string]string{"ORDERD_ADMIN_URL": base, "ORDERD_ADMIN_TOKEN": dlqToken}
	const hint = "run 'orderd dlq -help' for usage"
	for _, c := range []struct {
		name   string
		env    map[string]string
		args   []string
		stderr string // the start of the last line; with usage, of the line before the hint
		usage  bool   // a mistyped flag or command: the error, then the one-line hint
	}{
		{"unknown id", env, []string{"show", "99"}, "orderd dlq: 404 dead_letter_not_found: no dead letter has id 99", false},
		{"wrong token", env, []string{"list", "-token", "nope"}, "orderd dlq: 401 unauthorized: the bearer token is not the admin token", false},
		{"no token", map[string]string{"ORDERD_ADMIN_URL": base}, []string{"list"}, "orderd dlq: 401 unauthorized: the admin API needs an Authorization: Bearer <token> header (no token given", false},
		{"admin off", env, []string{"list", "-addr", off}, "orderd dlq: 404 not_found: no such route (is orderd at " + off, false},
		{"unreachable", env, []string{"list", "-addr", "http://127.0.0.1:1"}, "orderd dlq: cannot reach orderd at http://127.0.0.1:1", false},
		{"no command", env, nil, "orderd dlq: a command is required", false},
		{"unknown command", env, []string{"purge"}, `orderd dlq: unknown command "purge"`, true},
		{"no id", env, []string{"replay"}, "orderd dlq: replay takes one dead letter ID", false},
		{"bad id", env, []string{"discard", "x"}, `orderd dlq: discard: the ID must be a dead letter id (a whole number of 1 or more), not "x"`, false},
		{"id for list", env, []string{"list", "3"}, `orderd dlq: list takes no ID`, false},
		{"unknown flag", env, []string{"list", "-force"}, "orderd dlq: flag provided but not defined: -force", true},
		{"bad flag value", env, []string{"list", "-limit", "many"}, `orderd dlq: invalid value "many" for flag -limit`, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, errOut, err := dlqRun(t, c.env, c.args...)
			lines := strings.Split(strings.TrimSpace(errOut), "\n")
			last := lines[len(lines)-1]
			if c.usage {
				// Not the whole usage text: the error and the hint alone.
				if len(lines) != 2 || last != hint {
					t.Errorf("stderr:\n%s\nwant the error and then %q alone", errOut, hint)
				}
				last = lines[0]
			} else if strings.Contains(errOut, hint) {
				t.Errorf("stderr:\n%s\nwant no hint to -help", errOut)
			}
			if err == nil || out != "" || !strings.HasPrefix(last, c.stderr) {
				t.Errorf("err %v, stdout %q, stderr:\n%s\nwant the error line to start with %q", err, out, errOut, c.stderr)
			}
		})
	}
	// -help describes dlq and its own flags only, on stderr.
	out, errOut, err := dlqRun(t, env, "-help")
	if err != nil || out != "" || !strings.Contains(errOut, "usage: orderd dlq list") {
		t.Errorf("-help: %v\n%s", err, errOut)
	}
	for _, f := range []string{"-addr", "-token", "-after", "-limit"} {
		if !strings.Contains(errOut, f) {
			t.Errorf("-help does not mention %s:\n%s", f, errOut)
		}
	}
	for _, f := range []string{"-http-addr", "-store", "-kafka-brokers", "-mix"} {
		if strings.Contains(errOut, f) {
			t.Errorf("-help mentions %s, not a flag of dlq:\n%s", f, errOut)
		}
	}
}
