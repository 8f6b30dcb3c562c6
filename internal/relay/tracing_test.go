package relay_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/telemetry"
)

// TestPublishCarriesTraceContext: on the real broker, the record of an
// event whose stored trace is sampled carries a traceparent in that trace
// naming the relay's publish span, itself a child of the command's span;
// the record of an unsampled one carries the stored traceparent as it is,
// with no span made; an event without one gets no trace header.
func TestPublishCarriesTraceContext(t *testing.T) {
	r := newRig(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
	telemetry.Install(tp)
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	const sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	const quiet = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
	var events []store.Event
	for _, md := range []map[string]string{
		{telemetry.TraceParent: sampled, telemetry.TraceState: "caller=t1"},
		{telemetry.TraceParent: quiet},
		nil,
	} {
		id := uuid.New()
		e := store.Event{ID: uuid.Must(uuid.NewV7()), AggregateID: id, AggregateType: "Widget", Sequence: 1,
			Type: "WidgetChanged", SchemaVersion: 1, Data: json.RawMessage(`{"n":1}`), CausationID: uuid.New(),
			CorrelationID: uuid.New(), Timestamp: time.Now().UTC(), Metadata: md}
		if err := r.events.Append(context.Background(), id, 0, []store.Event{e}); err != nil {
			t.Fatal(err)
		}
		stored, err := r.events.Load(context.Background(), id, 0)
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, stored[0])
	}
	r.handle(r.relay, events...)

	byKey := map[string]string{}
	states := map[string]string{}
	for _, m := range r.consumeAll() {
		byKey[string(m.Key)] = header(m, "traceparent")
		states[string(m.Key)] = header(m, "tracestate")
	}
	spans := rec.Ended()
	if len(spans) != 1 || spans[0].Name() != "publish "+r.topic || spans[0].SpanKind() != trace.SpanKindProducer {
		t.Fatalf("spans %v, want one producer span publish %s", spans, r.topic)
	}
	pub := spans[0]
	if pub.Parent().SpanID().String() != "00f067aa0ba902b7" || pub.SpanContext().TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("publish span: trace %s parent %s, want the stored command's", pub.SpanContext().TraceID(), pub.Parent().SpanID())
	}
	want := "00-4bf92f3577b34da6a3ce929d0e0e4736-" + pub.SpanContext().SpanID().String() + "-01"
	if got := byKey[events[0].AggregateID.String()]; got != want || states[events[0].AggregateID.String()] != "caller=t1" {
		t.Errorf("sampled record: traceparent %q tracestate %q, want %q and caller=t1", got, states[events[0].AggregateID.String()], want)
	}
	if got := byKey[events[1].AggregateID.String()]; got != quiet {
		t.Errorf("unsampled record: traceparent %q, want the stored %q", got, quiet)
	}
	if got, ok := byKey[events[2].AggregateID.String()]; !ok || got != "" {
		t.Errorf("record of an event without a trace: traceparent %q (found %v), want none", got, ok)
	}
}
