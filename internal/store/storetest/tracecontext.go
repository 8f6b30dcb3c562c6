package storetest

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/telemetry"
)

// testTraceContext: the trace context a command stores in its events'
// metadata (telemetry.Inject: traceparent and tracestate), sampled or
// not, comes back intact from Load and from the feed, so that the relay
// and the projector find the command's trace.
func testTraceContext(t *testing.T, b backend) {
	s := b.open(t, nil)
	sub := subscribe(t, s, "traced", nil)
	id := uuid.Must(uuid.NewV7())
	want := widgets(id, 0, 2)
	state, err := trace.ParseTraceState("orderd=t61rcWkgMzE,vendor=x")
	if err != nil {
		t.Fatal(err)
	}
	contexts := []trace.SpanContext{
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12},
			SpanID: trace.SpanID{0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}, TraceFlags: trace.FlagsSampled, TraceState: state}),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12},
			SpanID: trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}}), // not sampled
	}
	for i, sc := range contexts {
		want[i].Metadata = map[string]string{"command": "Widget"}
		telemetry.Inject(trace.ContextWithSpanContext(context.Background(), sc), want[i].Metadata)
		if want[i].Metadata[telemetry.TraceParent] == "" {
			t.Fatalf("telemetry.Inject wrote no traceparent for %v", sc)
		}
	}
	mustAppend(t, s, id, 0, want)

	check := func(from string, got []store.Event) {
		t.Helper()
		b.checkEvents(t, got, want)
		for i, e := range got {
			sc := telemetry.FromMetadata(e.Metadata)
			wantSC := contexts[i].WithRemote(true)
			if !sc.Equal(wantSC) {
				t.Errorf("%s: event %d: trace context %v (metadata %v), want %v", from, i, sc, e.Metadata, wantSC)
			}
		}
	}
	check("Load", mustLoad(t, s, id, 0))
	check("the feed", sub.waitFor(want))
	if err := sub.stop(); err != nil {
		t.Errorf("Subscribe after its ctx ended: %v", err)
	}
}
