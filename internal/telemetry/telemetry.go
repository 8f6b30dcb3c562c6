// Package telemetry sets up OpenTelemetry tracing for orderd and holds the
// few helpers its packages share: spans that cost next to nothing when
// the request is not sampled, and the trace context as it travels in an
// event's metadata.
//
// The SDK is configured by the standard OTEL_ variables, which it reads
// from the process environment itself (OTEL_EXPORTER_OTLP_ENDPOINT,
// OTEL_TRACES_SAMPLER, OTEL_SERVICE_NAME, OTEL_BSP_*, ...). Whether to
// export at all is the caller's decision (Config.Export), made from the
// variables in cmd/orderd: without an endpoint nothing is exported, yet
// trace ids are still made and propagated, so that every event carries
// one. W3C Trace Context (traceparent, tracestate) is always the
// propagator.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderd/orderd/internal/store"
)

// Scope is the instrumentation scope of orderd's spans.
const Scope = "github.com/orderd/orderd"

// Config is what cmd/orderd reads from the OTEL_ variables it passes on
// (see ParseSampler); the SDK reads the others itself.
type Config struct {
	// EndpointURL is the OTLP/HTTP traces URL spans are exported to
	// (http://127.0.0.1:4318/v1/traces). Empty, no span is exported, and
	// none is recorded unless the caller's traceparent asks for it.
	EndpointURL string
	// Sampler decides which new traces are recorded when exporting; nil:
	// parentbased_always_on.
	Sampler sdktrace.Sampler
	// ServiceVersion and InstanceID describe this process in the spans'
	// resource; OTEL_SERVICE_NAME (default "orderd") and
	// OTEL_RESOURCE_ATTRIBUTES override them.
	ServiceVersion, InstanceID string
}

// Setup installs the global tracer provider and the W3C propagator. The
// returned shutdown flushes the spans still buffered and stops the
// exporter; call it on the way out.
func Setup(ctx context.Context, cfg Config) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(Propagator)
	res, err := resource.New(ctx,
		resource.WithAttributes(
			attribute.String("service.name", "orderd"),
			attribute.String("service.version", cfg.ServiceVersion),
			attribute.String("service.instance.id", cfg.InstanceID)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // last: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	export := cfg.EndpointURL != ""
	if export {
		exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(cfg.EndpointURL))
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP exporter: %w", err)
		}
		if cfg.Sampler == nil {
			cfg.Sampler = sdktrace.ParentBased(sdktrace.AlwaysSample())
		}
		opts = append(opts, sdktrace.WithBatcher(exp), sdktrace.WithSampler(cfg.Sampler))
	} else {
		// Ids for every command, a recording only for a caller that asks
		// for one (and nothing exported): OTEL_TRACES_SAMPLER is not read.
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	exporting.Store(export)
	Install(tp)
	return tp.Shutdown, nil
}

// Install makes tp the provider of orderd's spans (and the global one).
// Setup calls it; tests call it with a provider that records in memory.
// The global provider's own delegation follows only the first one set,
// so orderd keeps its tracer here, for a process (a test binary) that
// starts orderd more than once.
func Install(tp trace.TracerProvider) {
	otel.SetTracerProvider(tp)
	current.Store(&tracerOf{tp.Tracer(Scope)})
}

type tracerOf struct{ trace.Tracer }

// current is the tracer of the provider installed last.
var current atomic.Pointer[tracerOf]

// Propagator is W3C Trace Context: traceparent and tracestate.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// Tracer is the tracer of orderd's spans: the installed provider's, else
// the global one's.
func Tracer() trace.Tracer {
	if t := current.Load(); t != nil {
		return t.Tracer
	}
	return otel.Tracer(Scope)
}

// Child starts a span under the one in ctx only when that one is recording
// (sampled); otherwise it returns ctx and a span that does nothing, so
// that an unsampled command pays for no child spans at all.
func Child(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return ctx, parent
	}
	return Tracer().Start(ctx, name, opts...)
}

// End ends span, marking it failed with err when err is not nil.
func End(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// exporting is whether Setup installed an exporter: the batch spans of
// Linked are made only then.
var exporting atomic.Bool

// Linked wraps h so that each batch runs in a span named name, linked to
// the traces of its events (see Links) rather than joining one: a batch
// serves many commands. The span starts a trace of its own unless ctx
// has a span already (a rebuild's). Without export, h runs bare.
func Linked(name string, h store.Handler) store.Handler {
	return func(ctx context.Context, events []store.Event) error {
		if !exporting.Load() {
			return h(ctx, events)
		}
		var opts []trace.SpanStartOption
		if !trace.SpanContextFromContext(ctx).IsValid() {
			opts = append(opts, trace.WithNewRoot())
		}
		ctx, span := Tracer().Start(ctx, name, opts...)
		if span.IsRecording() {
			// The links only for a span that is kept: reading every
			// event's traceparent is the costly part.
			span.SetAttributes(attribute.Int("orderd.events", len(events)))
			for _, l := range Links(events) {
				span.AddLink(l)
			}
		}
		err := h(ctx, events)
		End(span, err)
		return err
	}
}
