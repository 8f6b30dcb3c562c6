package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderd/orderd/internal/store"
)

// The metadata keys of an event's trace context: the W3C header names,
// as the CloudEvents distributed-tracing extension names its attributes.
const (
	TraceParent = "traceparent"
	TraceState  = "tracestate"
)

// Inject writes the span context of ctx into md (traceparent and, when
// there is one, tracestate), sampled or not. A context without a valid
// span context writes nothing.
func Inject(ctx context.Context, md map[string]string) {
	Propagator.Inject(ctx, propagation.MapCarrier(md))
}

// FromMetadata returns the span context stored in md (by Inject), marked
// remote; an invalid one when md holds none or a malformed one.
func FromMetadata(md map[string]string) trace.SpanContext {
	if md[TraceParent] == "" {
		return trace.SpanContext{}
	}
	ctx := Propagator.Extract(context.Background(), propagation.MapCarrier(md))
	return trace.SpanContextFromContext(ctx)
}

// EventContext returns ctx with e's stored trace context as its remote
// parent, for a span that continues the command's trace (the relay's
// publish). ctx is unchanged when e has none.
func EventContext(ctx context.Context, e store.Event) context.Context {
	sc := FromMetadata(e.Metadata)
	if !sc.IsValid() {
		return ctx
	}
	return trace.ContextWithRemoteSpanContext(ctx, sc)
}

// maxLinks bounds the links of one span to a batch's events.
const maxLinks = 128

// Links returns a link to the trace of each event in events that has
// one, at most 128 and each trace once: a span over a batch (a
// projection, a rebuild) links to the commands' traces rather than
// joining one of them.
func Links(events []store.Event) []trace.Link {
	var links []trace.Link
	seen := map[trace.TraceID]bool{}
	for _, e := range events {
		sc := FromMetadata(e.Metadata)
		if !sc.IsValid() || seen[sc.TraceID()] {
			continue
		}
		seen[sc.TraceID()] = true
		links = append(links, trace.Link{SpanContext: sc})
		if len(links) == maxLinks {
			break
		}
	}
	return links
}

// TraceID is the trace id of ctx's span in hex, or "" when it has none.
func TraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	return sc.TraceID().String()
}
