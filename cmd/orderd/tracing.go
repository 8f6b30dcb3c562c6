package main

import (
	"context"
	"errors"
	"net/url"
	"runtime/debug"
	"strings"

	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/telemetry"
)

// setupTracing installs OpenTelemetry (see internal/telemetry) from the
// standard OTEL_ variables: spans are exported over OTLP/HTTP only when
// an endpoint is set and neither OTEL_SDK_DISABLED=true nor
// OTEL_TRACES_EXPORTER=none says otherwise; trace context is propagated
// and stored in events either way. The SDK reads the other variables
// (sampler, service name, batching) from the environment itself. The
// returned function flushes what is buffered; run it on the way out.
func setupTracing(ctx context.Context, cfg config, getenv func(string) string, log *zap.Logger) (func(context.Context) error, error) {
	endpoint := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if endpoint == "" {
		endpoint = getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	export := endpoint != "" && !strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") &&
		getenv("OTEL_TRACES_EXPORTER") != "none"
	shutdown, err := telemetry.Setup(ctx, telemetry.Config{Export: export, ServiceVersion: buildVersion(), InstanceID: cfg.instance})
	if err != nil {
		return nil, err
	}
	if export {
		sampler := getenv("OTEL_TRACES_SAMPLER")
		if sampler == "" {
			sampler = "parentbased_always_on"
		}
		log.Info("tracing: exporting spans over OTLP/HTTP", zap.String("endpoint", endpoint), zap.String("sampler", sampler),
			zap.String("sampler_arg", getenv("OTEL_TRACES_SAMPLER_ARG")))
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
