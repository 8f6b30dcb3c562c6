package main

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/telemetry/jaegertest"
)

// BenchmarkCreateOrderTracing is the cost of tracing on the command path,
// side by side in one run: CreateOrder under BenchmarkCreateOrder's load
// (64 clients, a real orderd on loopback, the embedded store on disk)
// with tracing off (no OTLP endpoint: trace context is still made,
// stored and logged), on but unsampled (an endpoint, the real Jaeger of
// scripts/jaeger.sh, and a parentbased_traceidratio of 0: no span
// recorded) and on and sampled (always_on: every command's spans, and
// the projector's, exported to Jaeger). Each case starts an orderd of its
// own. Besides throughput and latency it reports the process's CPU time
// per command, which other work on the machine disturbs less.
func BenchmarkCreateOrderTracing(b *testing.B) {
	j := jaegertest.Start(b)
	for _, c := range []struct {
		name string
		env  map[string]string
	}{
		{"off", nil},
		{"unsampled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": j.OTLP,
			"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}},
		{"sampled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": j.OTLP, "OTEL_TRACES_SAMPLER": "always_on"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			env := map[string]string{"ORDERD_LOG_LEVEL": "error"}
			for k, v := range c.env {
				env[k] = v
			}
			s := start(b, "", env)
			cust := s.registerCustomer(b, "bench@example.com").ID
			client := &http.Client{Timeout: 30 * time.Second,
				Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 128}}
			defer client.CloseIdleConnections()
			cpu0 := cpuTime(b)
			n := parallelLoad(b, "cmds", func(int) (time.Duration, error) {
				body := fmt.Sprintf(`{"customer_id":%q,"items":[{"product_id":%q,"quantity":2}]}`, cust, uuid.NewString())
				t0 := time.Now()
				_, err := post(client, s.base+"/v1/orders", body)
				return time.Since(t0), err
			})
			if n > 0 {
				// CPU time is steadier than throughput on a shared machine:
				// the process's (orderd and the clients) per command.
				b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(n), "cpu-µs/cmd")
			}
		})
	}
}
