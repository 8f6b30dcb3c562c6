package main

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/relay/kafkatest"
	"github.com/orderd/orderd/internal/telemetry/jaegertest"
)

// randomHex is n random bytes in hex: a trace or span id.
func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// traceparentParts splits a W3C traceparent into trace id, parent span id
// and flags, failing the test on anything else.
func traceparentParts(t testing.TB, what, v string) (traceID, spanID, flags string) {
	t.Helper()
	p := strings.Split(v, "-")
	if len(p) != 4 || p[0] != "00" || len(p[1]) != 32 || len(p[2]) != 16 || len(p[3]) != 2 {
		t.Fatalf("%s: traceparent %q is not W3C Trace Context", what, v)
	}
	return p[1], p[2], p[3]
}

// TestTracingEndToEnd: a command sent with a sampled traceparent continues
// the caller's trace through orderd to Kafka. The trace, read back from a
// real Jaeger (scripts/jaeger.sh), holds orderd's HTTP span under the
// caller's span, the decode, the append under it, and the relay's publish
// of the event; the event stores the command's trace context, and the
// Kafka record's traceparent names the same trace, with the publish span
// as parent, for a consumer to continue; the projector's batch links to
// the command's span from a trace of its own. A command whose traceparent is
// not sampled stores and publishes its trace context all the same, and
// nothing of it reaches Jaeger.
func TestTracingEndToEnd(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	j := jaegertest.Start(t)
	env := kafkaEnv(t, brokers, "OTEL_EXPORTER_OTLP_ENDPOINT", j.OTLP)
	// The SDK reads the service name from the process's environment: one
	// of this run's own, to find the projector's spans.
	service := "orderd-test-" + randomHex(t, 4)
	t.Setenv("OTEL_SERVICE_NAME", service)
	s := start(t, "", env)
	cust := s.registerCustomer(t, "traced@example.com")

	// The caller's span: a trace of its own, sampled.
	traceID, callerSpan := randomHex(t, 16), randomHex(t, 8)
	var sampled commandResult
	s.do(t, "POST", "/v1/orders", map[string]any{"customer_id": cust.ID, "items": []itemBody{{uuid.NewString(), 3}}},
		http.StatusCreated, "traceparent", "00-"+traceID+"-"+callerSpan+"-01", "tracestate", "caller=t1").json(t, &sampled)
	// Not sampled: its context travels, and nothing is exported.
	quietTrace := randomHex(t, 16)
	var quiet commandResult
	s.do(t, "POST", "/v1/orders", map[string]any{"customer_id": cust.ID, "items": []itemBody{{uuid.NewString(), 1}}},
		http.StatusCreated, "traceparent", "00-"+quietTrace+"-"+randomHex(t, 8)+"-00").json(t, &quiet)

	// The events store the command's trace context.
	stored := map[uuid.UUID]string{}
	var eventID uuid.UUID
	for _, c := range []struct {
		id           uuid.UUID
		trace, flags string
		state        string
	}{{sampled.ID, traceID, "01", "caller=t1"}, {quiet.ID, quietTrace, "00", ""}} {
		e := s.events(t, "orders", c.id)[0]
		tid, sid, flags := traceparentParts(t, "event metadata", e.Metadata["traceparent"])
		if tid != c.trace || flags != c.flags || e.Metadata["tracestate"] != c.state {
			t.Errorf("order %s: stored traceparent %q tracestate %q, want trace %s flags %s tracestate %q",
				c.id, e.Metadata["traceparent"], e.Metadata["tracestate"], c.trace, c.flags, c.state)
		}
		stored[c.id] = sid
		if c.id == sampled.ID {
			eventID = e.EventID
		}
	}

	// The records carry it (and conform to asyncapi.yaml).
	recs := kcat(t, brokers[0], env["ORDERD_KAFKA_TOPIC_PREFIX"]+"order-events", 2)
	checkKcat(t, "order-events", recs)
	headers := map[string]kcatRecord{}
	for _, r := range recs {
		headers[r.Key] = r
	}
	rec, ok := headers[sampled.ID.String()]
	if !ok {
		t.Fatalf("no record of order %s on order-events", sampled.ID)
	}
	recTrace, recParent, recFlags := traceparentParts(t, "the sampled record", rec.header("traceparent"))
	if recTrace != traceID || recFlags != "01" || rec.header("tracestate") != "caller=t1" {
		t.Errorf("record of the sampled order: traceparent %q tracestate %q, want trace %s, sampled, tracestate caller=t1",
			rec.header("traceparent"), rec.header("tracestate"), traceID)
	}
	qrec := headers[quiet.ID.String()]
	if got, want := qrec.header("traceparent"), "00-"+quietTrace+"-"+stored[quiet.ID]+"-00"; got != want {
		t.Errorf("record of the unsampled order: traceparent %q, want the stored %q", got, want)
	}

	// Stopping orderd flushes the spans still batched.
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	publish := "publish " + env["ORDERD_KAFKA_TOPIC_PREFIX"] + "order-events"
	spans := j.Trace(t, traceID, 30*time.Second, "POST /v1/orders", "decode", "append", publish)
	byName := map[string]jaegertest.Span{}
	for _, sp := range spans {
		if sp.TraceID != traceID {
			t.Errorf("span %s of trace %s", sp.OperationName, sp.TraceID)
		}
		byName[sp.OperationName] = sp
	}
	server := byName["POST /v1/orders"]
	if server.Parent() != callerSpan {
		t.Errorf("the HTTP span's parent is %q, want the caller's span %s", server.Parent(), callerSpan)
	}
	if server.SpanID != stored[sampled.ID] {
		t.Errorf("the event stores span %s, want the HTTP span %s", stored[sampled.ID], server.SpanID)
	}
	if got := server.Tag("http.response.status_code"); got != float64(http.StatusCreated) {
		t.Errorf("the HTTP span's status code tag is %v, want 201", got)
	}
	for _, name := range []string{"decode", "append"} {
		if byName[name].Parent() != server.SpanID {
			t.Errorf("span %s's parent is %q, want the HTTP span %s", name, byName[name].Parent(), server.SpanID)
		}
	}
	pub := byName[publish]
	if pub.Parent() != server.SpanID {
		t.Errorf("the publish span's parent is %q, want the command's span %s", pub.Parent(), server.SpanID)
	}
	if recParent != pub.SpanID {
		t.Errorf("the record's traceparent names span %s, want the publish span %s", recParent, pub.SpanID)
	}
	if got := pub.Tag("messaging.message.id"); got != eventID.String() {
		t.Errorf("the publish span's messaging.message.id is %v, want the event id", got)
	}
	// The projector's batch is a trace of its own that links to the
	// command's (a FOLLOWS_FROM reference in Jaeger's terms).
	linked := false
	deadline := time.Now().Add(20 * time.Second)
	for !linked && time.Now().Before(deadline) {
		for _, sp := range j.Operation(t, service, "project") {
			for _, ref := range sp.References {
				if ref.RefType == "FOLLOWS_FROM" && ref.TraceID == traceID && ref.SpanID == server.SpanID {
					linked = sp.TraceID != traceID
				}
			}
		}
		if !linked {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if !linked {
		t.Errorf("no project span of %s, in a trace of its own, links to the command's span %s", service, server.SpanID)
	}
	if !j.Missing(t, quietTrace) {
		t.Errorf("jaeger has spans of the unsampled trace %s", quietTrace)
	}
}
