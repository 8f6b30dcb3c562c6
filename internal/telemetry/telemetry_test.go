package telemetry

import (
	"context"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderd/orderd/internal/store"
)

// TestParseSampler: the specification's sampler names, and refusals of
// what is not one.
func TestParseSampler(t *testing.T) {
	for _, c := range []struct{ name, arg, want string }{
		{"", "", "ParentBased{root:AlwaysOnSampler"},
		{"always_on", "", "AlwaysOnSampler"},
		{"always_off", "", "AlwaysOffSampler"},
		{"traceidratio", "0.25", "TraceIDRatioBased{0.25}"},
		{"parentbased_traceidratio", "0", "ParentBased{root:TraceIDRatioBased{0}"},
		{"parentbased_always_off", "", "ParentBased{root:AlwaysOffSampler"},
	} {
		s, err := ParseSampler(c.name, c.arg)
		if err != nil || !strings.HasPrefix(s.Description(), c.want) {
			t.Errorf("%q %q: %v, %v; want %s", c.name, c.arg, s, err, c.want)
		}
	}
	for _, c := range []struct{ name, arg string }{{"jaeger_remote", ""}, {"traceidratio", "1.5"}, {"parentbased_traceidratio", "half"}} {
		if _, err := ParseSampler(c.name, c.arg); err == nil {
			t.Errorf("%q %q: no error", c.name, c.arg)
		}
	}
}

// TestChildOnlyWhenRecording: a child span is made under a recording span
// and not under an unsampled one, where the parent comes back as it is.
func TestChildOnlyWhenRecording(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
	Install(tp)
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	ctx, parent := Tracer().Start(context.Background(), "parent")
	_, child := Child(ctx, "child")
	child.End()
	parent.End()
	if n := len(rec.Ended()); n != 2 {
		t.Errorf("under a sampled span: %d spans ended, want 2", n)
	}

	unsampled := trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}}))
	ctx, parent = Tracer().Start(unsampled, "quiet")
	cctx, child := Child(ctx, "child")
	if !child.SpanContext().Equal(parent.SpanContext()) || child.IsRecording() || cctx != ctx {
		t.Error("under an unsampled span Child made a span")
	}
	parent.End()
	if n := len(rec.Ended()); n != 2 {
		t.Errorf("after the unsampled span: %d spans ended, want 2", n)
	}
}

// TestLinks: one link per trace among a batch's events, none for events
// without a trace context.
func TestLinks(t *testing.T) {
	md := func(tp string) map[string]string { return map[string]string{TraceParent: tp} }
	a := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	b := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
	events := []store.Event{{Metadata: md(a)}, {Metadata: md(a)}, {}, {Metadata: md("garbage")}, {Metadata: md(b)}}
	links := Links(events)
	if len(links) != 2 || links[0].SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" ||
		links[1].SpanContext.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" {
		t.Errorf("links %v, want one to each of the two traces", links)
	}
}
