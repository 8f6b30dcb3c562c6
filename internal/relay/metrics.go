package relay

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// Metrics are the relay's Prometheus series.
type Metrics struct {
	publishedTotal    prometheus.Counter
	retriedTotal      prometheus.Counter
	deadLetteredTotal *prometheus.CounterVec
	discardedTotal    prometheus.Counter
	breaker           prometheus.Gauge
	transitions       *prometheus.CounterVec
	delay             prometheus.Histogram
}

// NewMetrics creates the relay's series and registers them with reg (none
// when reg is nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		publishedTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderd_relay_published_total", Help: "Events acknowledged by Kafka (a republished event counts again).",
		}),
		retriedTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderd_relay_retries_total", Help: "Publish attempts that failed transiently and were retried.",
		}),
		deadLetteredTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderd_relay_dead_lettered_total", Help: "Events put in the dead-letter ledger, by state (failed or parked).",
		}, []string{"state"}),
		discardedTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderd_relay_discarded_total", Help: "Dead letters discarded by an operator.",
		}),
		breaker: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "orderd_relay_breaker_state", Help: "Kafka circuit breaker: 0 closed, 1 half-open, 2 open.",
		}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderd_relay_breaker_transitions_total", Help: "Kafka circuit breaker state changes, by the state entered.",
		}, []string{"to"}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "orderd_relay_publish_delay_seconds",
			Help:    "From an event's decision (its timestamp) to Kafka's acknowledgement.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 60},
		}),
	}
	if reg != nil {
		reg.MustRegister(m.publishedTotal, m.retriedTotal, m.deadLetteredTotal, m.discardedTotal, m.breaker, m.transitions, m.delay)
	}
	return m
}

// published records msgs as acknowledged now.
func (m *Metrics) published(msgs []Message) {
	m.publishedTotal.Add(float64(len(msgs)))
	now := time.Now()
	for _, msg := range msgs {
		m.delay.Observe(now.Sub(msg.Time).Seconds())
	}
}
func (m *Metrics) retried()   { m.retriedTotal.Inc() }
func (m *Metrics) discarded() { m.discardedTotal.Inc() }

func (m *Metrics) deadLettered(letters []DeadLetter) {
	for _, l := range letters {
		m.deadLetteredTotal.WithLabelValues(l.State).Inc()
	}
}

func (m *Metrics) breakerState(s gobreaker.State) {
	m.transitions.WithLabelValues(s.String()).Inc()
	switch s {
	case gobreaker.StateClosed:
		m.breaker.Set(0)
	case gobreaker.StateHalfOpen:
		m.breaker.Set(1)
	case gobreaker.StateOpen:
		m.breaker.Set(2)
	}
}
