package api

import (
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

// command is handle for a command route: it also counts the command by its
// answer's status and times it.
func (s *Server) command(name string, fn func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	h := s.handle(fn)
	if s.metrics == nil {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		h(rec, r)
		s.metrics.latency.WithLabelValues(name).Observe(time.Since(start).Seconds())
		s.metrics.commands.WithLabelValues(name, strconv.Itoa(rec.status)).Inc()
	}
}
