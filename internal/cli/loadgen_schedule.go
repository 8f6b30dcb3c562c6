package cli

import (
	"context"
	"sync/atomic"
	"time"
)

// budget is the operations left to -count.
type budget struct {
	n         atomic.Int64
	unlimited bool
}

// take takes n operations (one order's) if that many are left.
func (b *budget) take(n int64) bool {
	if b.unlimited {
		return true
	}
	for {
		left := b.n.Load()
		if left < n {
			return false
		}
		if b.n.CompareAndSwap(left, left-n) {
			return true
		}
	}
}

// schedule hands out the operations' start times: in the open loop slot k
// starts at start + k/rate, whoever takes it and whenever; in the closed
// loop a slot starts when it is taken.
type schedule struct {
	ctx        context.Context
	start, end time.Time // end is zero without a time limit
	rate       float64
	taken      atomic.Int64
	maxBacklog atomic.Int64
}

func newSchedule(ctx context.Context, rate float64, duration time.Duration) *schedule {
	s := &schedule{ctx: ctx, start: time.Now(), rate: rate}
	if duration > 0 {
		s.end = s.start.Add(duration)
	}
	return s
}

// slot takes the next slot and returns its start time, or false when the
// run is over: stopped, or the slot starts at or after the end.
func (s *schedule) slot() (time.Time, bool) {
	if s.ctx.Err() != nil {
		return time.Time{}, false
	}
	k := s.taken.Add(1) - 1
	at := time.Now()
	if s.rate > 0 {
		at = s.start.Add(time.Duration(float64(k) / s.rate * float64(time.Second)))
		if backlog := s.backlog(time.Now()); backlog > s.maxBacklog.Load() {
			s.maxBacklog.Store(backlog) // a racy maximum: close enough for a report
		}
	}
	if !s.end.IsZero() && !at.Before(s.end) {
		return time.Time{}, false
	}
	return at, true
}

// wait sleeps until at; false if the run is stopped meanwhile.
func (s *schedule) wait(at time.Time) bool {
	d := time.Until(at)
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// backlog is how many slots of the open loop are due by now and not yet
// taken by a worker: they wait for one, and their latency grows meanwhile.
func (s *schedule) backlog(now time.Time) int64 {
	if s.rate <= 0 {
		return 0
	}
	if !s.end.IsZero() && now.After(s.end) {
		now = s.end
	}
	due := int64(now.Sub(s.start).Seconds()*s.rate) + 1
	return max(0, due-s.taken.Load())
}
