package relay

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/sony/gobreaker/v2"
	"go.uber.org/zap"
)

// newBreaker returns the circuit breaker in front of Kafka.
func newBreaker(cfg Config, log *zap.Logger, metrics *Metrics) *gobreaker.CircuitBreaker[struct{}] {
	metrics.breaker.Set(0) // closed
	return gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "kafka",
		MaxRequests: cfg.BreakerSuccesses,
		Timeout:     cfg.BreakerOpen,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= cfg.BreakerFailures },
		// A message that can never be published says nothing about the
		// broker's health: it must not open the breaker.
		IsSuccessful: func(err error) bool { return err == nil || errors.Is(err, ErrPermanent) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			log.Warn("kafka circuit breaker", zap.String("from", from.String()), zap.String("to", to.String()))
			metrics.breakerState(to)
		},
	})
}

// publish sends msgs through the circuit breaker, retrying transient
// failures with capped, jittered exponential backoff until ctx ends. While
// the breaker is open attempts fail at once and only the backoff waits. It
// returns nil, an error wrapping ErrPermanent, ctx's error, or one wrapping
// ErrPartitionsChanged: retrying cannot fix that, and no event is at fault,
// so the relay stops with it (its worker fails and shows the error in
// /readyz) until an operator records the new count.
func (r *Relay) publish(ctx context.Context, msgs []Message) error {
	if r.pending.CompareAndSwap(0, time.Now().UnixNano()) {
		defer r.pending.Store(0)
	}
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(r.cfg.RetryInitial),
		backoff.WithMaxInterval(r.cfg.RetryMax),
		backoff.WithRandomizationFactor(0.5),
		backoff.WithMaxElapsedTime(0), // transient failures never dead-letter
	)
	attempt := 0
	return backoff.Retry(func() error {
		attempt++
		_, err := r.breaker.Execute(func() (struct{}, error) { return struct{}{}, r.pub.Publish(ctx, msgs) })
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ErrPermanent), errors.Is(err, ErrPartitionsChanged):
			return backoff.Permanent(err)
		case ctx.Err() != nil:
			return backoff.Permanent(ctx.Err())
		}
		r.metrics.retried()
		if attempt == 1 || attempt%10 == 0 {
			r.log.Warn("publish failed; retrying", zap.Int("messages", len(msgs)), zap.Int("attempt", attempt),
				zap.String("breaker", r.Breaker()), zap.Error(err))
		}
		return err
	}, backoff.WithContext(b, ctx))
}
