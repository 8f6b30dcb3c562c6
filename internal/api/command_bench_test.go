package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// BenchmarkCommandLayers prices what the HTTP layer adds to a command
// around its handler: the route's middleware (traced, correlate, the
// command's metrics and name) and the answer of a created aggregate,
// without a socket, the aggregate or the store. It reports the CPU per
// command (getrusage: the process's user and system time, which holds
// better than ns/op on a shared machine) beside -benchmem's allocations.
func BenchmarkCommandLayers(b *testing.B) {
	s := New(nil, nil, nil, nil, nil, zap.NewNop()).WithMetrics(NewMetrics(prometheus.NewRegistry()), nil)
	id := uuid.Must(uuid.NewV7())
	cmd := s.command("CreateOrder", func(w http.ResponseWriter, r *http.Request) error {
		if commandName(r.Context()) != "CreateOrder" || correlationID(r.Context()) == uuid.Nil {
			b.Fatal("the command's name or correlation id is missing")
		}
		w.Header().Set("Location", "/v1/orders/"+id.String())
		return writeCommandResult(w, http.StatusCreated, id, 1)
	})
	h := s.traced(s.correlate(s.recoverPanics(cmd)))
	body := `{"customer_id":"0192f3a4-5b6c-7d8e-9f01-23456789abcd","items":[]}`
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime(b)
	for i := 0; i < b.N; i++ {
		r := httptest.NewRequest(http.MethodPost, "/v1/orders", strings.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusCreated {
			b.Fatalf("status %d", w.Code)
		}
	}
	b.ReportMetric(float64(cpuTime(b)-cpu0)/1e3/float64(b.N), "cpu-µs/op")
}
