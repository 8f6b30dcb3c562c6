package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"go.uber.org/zap"
)

// ErrUnavailable marks a failure of the storage itself rather than of the
// request: a full disk, a read-only file system, an I/O error, a cluster
// without enough live replicas. Nothing of a refused append is stored.
// Retrying later may succeed; retrying at once is unlikely to.
var ErrUnavailable = errors.New("store: storage unavailable")

// WriteHealth is implemented by a backend that knows whether it can write.
type WriteHealth interface {
	// CheckWrite returns nil while the backend's writes succeed, and an
	// error wrapping ErrUnavailable from a write that failed for a storage
	// fault until one succeeds again. While a fault lasts it probes with a
	// tiny write (at most every ProbeEvery), so that recovery is noticed
	// without traffic.
	CheckWrite(ctx context.Context) error

	// StorageFaults returns the storage faults counted since start, by
	// operation (append, progress, read, keys, probe, …).
	StorageFaults() map[string]int64
}

// ProbeEvery is how often at most a Health whose writes fail runs its
// write probe.
const ProbeEvery = time.Second

// Health tracks a backend's episodes of storage faults: it goes down at a
// write that failed for a storage fault and up again at the next write
// that succeeds. It logs once per episode (an error when it goes down, an
// info when it comes back) rather than at every failure, and counts every
// fault by operation. The zero value is not usable; see NewHealth.
type Health struct {
	name string
	log  *zap.Logger
	now  func() time.Time

	mu       sync.Mutex
	down     error     // the fault that opened the episode, nil while up
	since    time.Time // when the episode began
	last     error     // the latest fault of the episode
	probedAt time.Time
	faults   map[string]int64
	episodes int64
}

// NewHealth returns a Health that is up. name says whose health it is in
// the logs ("sqlite", "scylla"); log may be nil.
func NewHealth(name string, log *zap.Logger) *Health {
	if log == nil {
		log = zap.NewNop()
	}
	return &Health{name: name, log: log, now: time.Now, faults: map[string]int64{}}
}

// Fault counts a storage fault of op. A fault of a write (write true)
// opens an episode when none is open; a failed read is only counted,
// since reads say nothing about the ability to write.
func (h *Health) Fault(op string, write bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.faults[op]++
	if !write {
		return
	}
	h.last = err
	if h.down != nil {
		return
	}
	h.down, h.since = err, h.now()
	h.episodes++
	h.log.Error(h.name+": storage fault: writes fail until the storage recovers; commands answer 503 and /readyz reports the store down",
		zap.String("op", op), zap.Error(err))
}

// OK records a write that succeeded, which ends the episode if one is
// open.
func (h *Health) OK() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down == nil {
		return
	}
	h.log.Info(h.name+": storage recovered: writes succeed again",
		zap.Duration("after", h.now().Sub(h.since)), zap.NamedError("fault", h.down))
	h.down, h.last = nil, nil
}

// Down reports whether an episode is open.
func (h *Health) Down() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.down != nil
}

// Err returns nil while up, or an error wrapping ErrUnavailable that says
// since when writes fail and why.
func (h *Health) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.errLocked()
}

func (h *Health) errLocked() error {
	if h.down == nil {
		return nil
	}
	return fmt.Errorf("%w: writes fail since %s: %v", ErrUnavailable,
		h.since.UTC().Format(time.RFC3339), h.last)
}

// Check returns nil while up. While down, it runs probe (a tiny write) if
// none ran within ProbeEvery, and returns nil if the probe succeeded (the
// episode is then over) or the episode's error otherwise. The backend
// counts the probe's fault, if any, on its write path, like any write's.
func (h *Health) Check(ctx context.Context, probe func(ctx context.Context) error) error {
	h.mu.Lock()
	if h.down == nil {
		h.mu.Unlock()
		return nil
	}
	due := h.now().Sub(h.probedAt) >= ProbeEvery
	if due {
		h.probedAt = h.now()
	}
	h.mu.Unlock()
	if due {
		switch err := probe(ctx); {
		case err == nil:
			h.OK()
		case errors.Is(err, ErrUnavailable):
			h.mu.Lock()
			if h.down != nil {
				h.last = err
			}
			h.mu.Unlock()
		}
	}
	return h.Err()
}

// Faults returns the faults counted since start, by operation.
func (h *Health) Faults() map[string]int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.faults)
}

// Episodes returns how many episodes have begun since start.
func (h *Health) Episodes() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.episodes
}
