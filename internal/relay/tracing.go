package relay

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/telemetry"
)

// traceHeaders are the record headers of e's stored trace context, the
// W3C traceparent and tracestate (the CloudEvents distributed-tracing
// extension), under their own names, as Kafka clients' tracing reads
// them: a consumer continues the command's trace. An event stored without
// one (before tracing) gets none.
func traceHeaders(e store.Event) []Header {
	var hs []Header
	for _, k := range []string{telemetry.TraceParent, telemetry.TraceState} {
		if v := e.Metadata[k]; v != "" {
			hs = append(hs, Header{Key: k, Value: []byte(v)})
		}
	}
	return hs
}

// publishSpans starts a producer span for each event of wave whose stored
// trace is sampled, as a child of the command's span, so that the
// command's trace holds its publish; that message's traceparent then
// names the publish span, which a consumer's span follows. Events of
// unsampled traces get no span and keep their stored traceparent. The
// returned end ends the spans with the wave's outcome.
func publishSpans(ctx context.Context, wave []store.Event, msgs []Message) (end func(error)) {
	var spans []trace.Span
	for i, e := range wave {
		sc := telemetry.FromMetadata(e.Metadata)
		if !sc.IsSampled() {
			continue
		}
		sctx, span := telemetry.Tracer().Start(trace.ContextWithRemoteSpanContext(ctx, sc), "publish "+msgs[i].Topic,
			trace.WithSpanKind(trace.SpanKindProducer))
		if !span.IsRecording() {
			span.End()
			continue
		}
		span.SetAttributes(
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", msgs[i].Topic),
			attribute.String("messaging.message.id", e.ID.String()),
			attribute.String("messaging.kafka.message.key", string(msgs[i].Key)),
			attribute.String("orderd.event_type", e.Type),
			attribute.Int64("orderd.sequence", e.Sequence))
		spans = append(spans, span)
		carrier := propagation.MapCarrier{}
		telemetry.Propagator.Inject(sctx, carrier)
		for j, h := range msgs[i].Headers {
			if v, ok := carrier[h.Key]; ok {
				msgs[i].Headers[j].Value = []byte(v)
			}
		}
	}
	return func(err error) {
		for _, s := range spans {
			telemetry.End(s, err)
		}
	}
}
