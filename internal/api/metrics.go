package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the HTTP layer's Prometheus series.
type Metrics struct {
	commands *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// NewMetrics creates the command series and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderd_commands_total", Help: "Commands handled, by command and HTTP status.",
		}, []string{"command", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "orderd_command_duration_seconds",
			Help:    "Time from a command's arrival to its answer, by command.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"command"}),
	}
	if reg != nil {
		reg.MustRegister(m.commands, m.latency)
	}
	return m
}

// command is handle for a command route. name, the command's one spelling,
// goes into every event's metadata (see meta) and labels the command's
// series: its count by answer status and its latency.
func (s *Server) command(name string, fn func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	var handled http.Handler = s.handle(fn)
	if s.idem != nil {
		handled = s.idem.Middleware(handled)
	}
	h := func(w http.ResponseWriter, r *http.Request) {
		handled.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), commandKey, name)))
	}
	if s.metrics == nil {
		return h
	}
	latency := s.metrics.latency.WithLabelValues(name)
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		h(rec, r)
		latency.Observe(time.Since(start).Seconds())
		s.metrics.commands.WithLabelValues(name, strconv.Itoa(rec.status)).Inc()
	}
}

// commandName is the name of the command r runs, as its route set it.
func commandName(ctx context.Context) string {
	name, _ := ctx.Value(commandKey).(string)
	return name
}
