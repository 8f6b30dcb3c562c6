package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"runtime/debug"
	"strings"

	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/telemetry"
)

// setupTracing installs OpenTelemetry (see internal/telemetry) from the
// standard OTEL_ variables: spans are exported over OTLP/HTTP only when an
// endpoint is set (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or
// OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces) and neither
// OTEL_SDK_DISABLED=true nor OTEL_TRACES_EXPORTER=none says otherwise,
// sampled as OTEL_TRACES_SAMPLER says; trace context is propagated and
// stored in events either way. The SDK reads the remaining variables
// (headers, timeouts, batching, OTEL_SERVICE_NAME, resource attributes)
// itself. The returned function flushes what is buffered; run it on the
// way out.
func setupTracing(ctx context.Context, cfg config, getenv func(string) string, log *zap.Logger) (func(context.Context) error, error) {
	endpoint := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if base := getenv("OTEL_EXPORTER_OTLP_ENDPOINT"); endpoint == "" && base != "" {
		endpoint = strings.TrimSuffix(base, "/") + "/v1/traces"
	}
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") || getenv("OTEL_TRACES_EXPORTER") == "none" {
		endpoint = ""
	}
	name, arg := getenv("OTEL_TRACES_SAMPLER"), getenv("OTEL_TRACES_SAMPLER_ARG")
	sampler, err := telemetry.ParseSampler(name, arg)
	if err != nil {
		return nil, err
	}
	if endpoint != "" {
		if _, err := url.Parse(endpoint); err != nil {
			return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: %w", err)
		}
	}
	shutdown, err := telemetry.Setup(ctx, telemetry.Config{EndpointURL: endpoint, Sampler: sampler,
		ServiceVersion: buildVersion(), InstanceID: cfg.instance})
	if err != nil {
		return nil, err
	}
	if endpoint != "" {
		log.Info("tracing: exporting spans over OTLP/HTTP", zap.String("endpoint", endpoint),
			zap.String("sampler", sampler.Description()))
	} else {
		log.Info("tracing: no OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT), no span exported; trace context is still propagated and stored in events")
	}
	return shutdown, nil
}

// traceURL parses -trace-ui-url: empty, or an absolute http(s) URL that
// has {trace_id} in it.
func traceURL(p *string) func(string) error {
	return func(v string) error {
		*p = v
		if v == "" {
			return nil
		}
		u, err := url.Parse(strings.ReplaceAll(v, "{trace_id}", "0"))
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			return errors.New("is not an absolute http or https URL")
		case !strings.Contains(v, "{trace_id}"):
			return errors.New("has no {trace_id} for the trace id to go in")
		}
		return nil
	}
}

// buildVersion is orderd's module version as the build recorded it
// ("(devel)" from a work tree), for the spans' resource.
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.Main.Version
	}
	return ""
}
