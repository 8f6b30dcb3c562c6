package worker

import (
	"time"

	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"
)

// NewSupervisor returns the supervisor of elected workers, name, with the
// restart policy orderd gives every worker: one that keeps failing (a disk
// that stays full, Kafka down) is restarted twice at once, then every
// 5–7.5 s (failures decay over 30 s), never in a hot loop. On stop it
// waits up to stopWait for its workers to drain before giving up on them;
// its events are logged to log as warnings.
//
// Give a worker whose failures must not hold others back (the relay while
// Kafka is down, beside the projector) a supervisor of its own, added to
// the first: each spends its own failure budget.
func NewSupervisor(name string, stopWait time.Duration, log *zap.Logger) *suture.Supervisor {
	return suture.New(name, suture.Spec{
		EventHook:        func(e suture.Event) { log.Warn("supervisor", zap.String("event", e.String())) },
		Timeout:          stopWait,
		FailureThreshold: 2, FailureDecay: 30, FailureBackoff: 5 * time.Second,
	})
}
