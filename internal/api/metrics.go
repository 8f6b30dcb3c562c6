package api

import (
	"context"
	"net/http"
	"strconv"
	"sync"
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
		if i := requestOf(r.Context()); i != nil {
			i.command = name // no copy of the request for it
		} else {
			r = r.WithContext(context.WithValue(r.Context(), commandKey, name))
		}
		handled.ServeHTTP(w, r)
	}
	if s.metrics == nil {
		return h
	}
	latency := s.metrics.latency.WithLabelValues(name)
	// The command's counter of each status, looked up once: a look-up
	// hashes the label values at every call.
	var counts sync.Map // int status → prometheus.Counter
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		h(rec, r)
		latency.Observe(time.Since(start).Seconds())
		c, ok := counts.Load(rec.status)
		if !ok {
			c, _ = counts.LoadOrStore(rec.status, s.metrics.commands.WithLabelValues(name, strconv.Itoa(rec.status)))
		}
		c.(prometheus.Counter).Inc()
	}
}

// commandKey is the context key of a command's name on a request that
// correlate did not see (a handler mounted on its own, in tests).
const commandKey ctxKey = 1

// commandName is the name of the command r runs, as its route set it.
func commandName(ctx context.Context) string {
	if i := requestOf(ctx); i != nil {
		return i.command
	}
	name, _ := ctx.Value(commandKey).(string)
	return name
}
