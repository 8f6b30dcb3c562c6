package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/orderd/orderd"
	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/telemetry"
)

// traced is a real API on a SQLite store, with the OpenTelemetry SDK
// recording its spans in memory (sampler as given) and its logs observed.
type traced struct {
	base   string
	events *sqlite.Store
	spans  *tracetest.SpanRecorder
	logs   *observer.ObservedLogs
}

func newTraced(t *testing.T, sampler sdktrace.Sampler) *traced {
	t.Helper()
	events, err := sqlite.OpenStore(filepath.Join(t.TempDir(), "events.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = events.Close() })
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sampler))
	prev := otel.GetTracerProvider()
	telemetry.Install(tp)
	t.Cleanup(func() { telemetry.Install(prev); _ = tp.Shutdown(context.Background()) })
	core, logs := observer.New(zapcore.InfoLevel)
	srv := New(aggregate.NewHandler(events, time.Now, aggregate.WithEmailClaims(events.EmailClaims())), nil, events, nil, orderd.OpenAPI, zap.New(core))
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return &traced{base: ts.URL, events: events, spans: rec, logs: logs}
}

func (tr *traced) post(t *testing.T, path, body, traceparent string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, tr.base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if traceparent != "" {
		req.Header.Set("traceparent", traceparent)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// TestTraceContinuesIntoEvents: a command sent with a traceparent runs in
// a server span under the caller's span, with child spans for decoding and
// the append; its event stores the server span's context; the request's
// log line carries the trace id.
func TestTraceContinuesIntoEvents(t *testing.T) {
	tr := newTraced(t, sdktrace.ParentBased(sdktrace.AlwaysSample()))
	const traceID, caller = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	id := uuid.New()
	resp := tr.post(t, "/v1/customers", `{"id":"`+id.String()+`","email":"t@example.com","first_name":"T","last_name":"R","phone":"+15550123"}`,
		"00-"+traceID+"-"+caller+"-01")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("register: %d", resp.StatusCode)
	}
	ended := tr.spans.Ended()
	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range ended {
		byName[s.Name()] = s
		if s.SpanContext().TraceID().String() != traceID {
			t.Errorf("span %s in trace %s, want %s", s.Name(), s.SpanContext().TraceID(), traceID)
		}
	}
	server, ok := byName["POST /v1/customers"]
	if !ok {
		t.Fatalf("no server span named after the route among %d spans: %v", len(ended), names(ended))
	}
	if server.Parent().SpanID().String() != caller || server.SpanKind() != trace.SpanKindServer {
		t.Errorf("server span: parent %s kind %s, want the caller's %s, server", server.Parent().SpanID(), server.SpanKind(), caller)
	}
	for _, name := range []string{"decode", "append"} {
		if s, ok := byName[name]; !ok || s.Parent().SpanID() != server.SpanContext().SpanID() {
			t.Errorf("span %s missing or not under the server span (spans %v)", name, names(ended))
		}
	}
	evs, err := tr.events.Load(context.Background(), id, 0)
	if err != nil || len(evs) != 1 {
		t.Fatalf("Load: %d events, %v", len(evs), err)
	}
	if got, want := evs[0].Metadata[telemetry.TraceParent], "00-"+traceID+"-"+server.SpanContext().SpanID().String()+"-01"; got != want {
		t.Errorf("event traceparent %q, want the server span's %q", got, want)
	}
	logged := tr.logs.FilterMessage("request").All()
	if len(logged) != 1 || logged[0].ContextMap()["trace_id"] != traceID {
		t.Errorf("request log lines %v, want one with trace_id %s", logged, traceID)
	}
}

// TestUnsampledCommandStillStoresContext: without a sampled caller and with
// a sampler that keeps nothing, no span is recorded, yet the event stores
// a trace context (a new trace id, not sampled) and the log carries it.
func TestUnsampledCommandStillStoresContext(t *testing.T) {
	tr := newTraced(t, sdktrace.ParentBased(sdktrace.NeverSample()))
	id := uuid.New()
	if resp := tr.post(t, "/v1/customers", `{"id":"`+id.String()+`","email":"u@example.com","first_name":"U","last_name":"S","phone":"+15550123"}`, ""); resp.StatusCode != http.StatusCreated {
		t.Fatalf("register: %d", resp.StatusCode)
	}
	if n := len(tr.spans.Ended()); n != 0 {
		t.Errorf("%d spans recorded, want none", n)
	}
	evs, err := tr.events.Load(context.Background(), id, 0)
	if err != nil || len(evs) != 1 {
		t.Fatalf("Load: %d events, %v", len(evs), err)
	}
	sc := telemetry.FromMetadata(evs[0].Metadata)
	if !sc.IsValid() || sc.IsSampled() {
		t.Fatalf("stored trace context %v (metadata %v), want a valid, unsampled one", sc, evs[0].Metadata)
	}
	logged := tr.logs.FilterMessage("request").All()
	if len(logged) != 1 || logged[0].ContextMap()["trace_id"] != sc.TraceID().String() {
		t.Errorf("request log lines %v, want one with trace_id %s", logged, sc.TraceID())
	}
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name())
	}
	return out
}
