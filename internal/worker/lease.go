// Package worker runs orderd's background workers (the projector, the
// relay) on the one instance of a cluster that holds each worker's lease,
// with the others standing by to take over, and lets a graceful shutdown
// finish their work in flight.
//
// Elected is one worker's lease taking, standby and handover; DrainingFeed
// is the change feed the workers subscribe to, which drains on shutdown;
// NewSupervisor is the supervisor that restarts a failing worker.
package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/store"
)

// ErrLeaseLost is the cause of a worker's context ending when its instance
// no longer holds the worker's lease (context.Cause tells it).
var ErrLeaseLost = errors.New("lease lost")

// ErrStepDown is wrapped by the error of a worker that gives its lease up
// on purpose because it cannot do its work here (the relay that cannot
// reach Kafka), so that another instance takes over. Make it with
// StepDown; Elected releases the lease, stands by for the time StepDown
// names without trying to take it back, and counts no failure.
var ErrStepDown = errors.New("stepping down")

// stepDown is the error StepDown makes.
type stepDown struct {
	aside time.Duration
	cause error
}

// StepDown returns an error for a worker to return when it should give its
// lease up and stand aside for aside (another instance takes the lease
// meanwhile; this one takes it again afterwards if nobody holds it), for
// cause. It wraps ErrStepDown and cause.
func StepDown(aside time.Duration, cause error) error {
	return &stepDown{aside: aside, cause: cause}
}

func (s *stepDown) Error() string {
	return fmt.Sprintf("%v: standing aside for %v: %v", ErrStepDown, s.aside, s.cause)
}

func (s *stepDown) Unwrap() []error { return []error{ErrStepDown, s.cause} }

// errHandedOver is why a shard's worker stops when the balance gives the
// shard to another instance (Balanced); wrapped in ErrLeaseLost.
var errHandedOver = errors.New("handed over")

// Roles of an instance for one worker, as /readyz shows them.
const (
	RoleActive  = "active"  // this instance holds the lease and runs the worker
	RoleStandby = "standby" // another instance does, or nobody yet
)

// Elected runs a worker on the one instance that holds its lease; on the
// others it stands by, trying to take the lease every ttl/3, so that one of
// them takes over within the ttl when the holder dies.
//
// The holder renews every ttl/3. Its worker's context ends when a renewal
// finds the lease taken, and also when its own deadline (the start of the
// last successful renewal plus ttl, on this process's monotonic clock)
// passes without a renewal, whether the store answered or not: a holder
// that was paused or cut off never acts beside its successor, which
// cannot take the lease before that same deadline.
//
// Make one with NewElected and run it under a supervisor (NewSupervisor).
type Elected struct {
	leases store.Leases
	name   string // the lease, and the worker's name
	holder string // this instance
	ttl    time.Duration
	work   func(ctx context.Context) error
	log    *zap.Logger

	mu         sync.Mutex
	role       string
	leader     string    // the holder last seen, this instance or another
	seen       time.Time // when leader was last seen (sent of the try that saw it)
	until      time.Time // while active: the deadline of the lease held, on this process's clock
	err        error     // why the worker last failed, until it runs again
	aside      error     // why the worker stands aside after a step-down, until it runs again
	epoch      int64     // the epoch of this instance's last take of the lease
	fenced     int64     // how many times a write of the worker was refused (store.ErrFenced)
	asideUntil time.Time // when a step-down's standing aside ends

	// Of one shard of a Balanced worker; the zero values are a whole
	// worker's: the fence's Shard is Whole and the lease is always wanted.
	shard store.Shard
	want  func() bool   // whether this instance should hold the lease now; nil: always
	nudge chan struct{} // a change of want, so that it acts before its next tick
}

// NewElected returns the elected worker name, run by work while holder
// (this instance) holds the lease name in leases, which lasts ttl
// unrenewed. work's context ends when the lease is lost (its cause wraps
// ErrLeaseLost) or when Serve's context ends; work returns nil then, or
// the error that made it fail. ttl must be at least a few milliseconds:
// renewals come every ttl/3.
//
// work's context carries the lease's fence (store.WithFence: the lease's
// name and the epoch of this take), so that every write the worker makes
// through it is conditional on that epoch; a write refused with
// store.ErrFenced means another instance took the lease, and work
// returning it counts as a lost lease, not as a failure.
func NewElected(leases store.Leases, name, holder string, ttl time.Duration, work func(ctx context.Context) error, log *zap.Logger) *Elected {
	return &Elected{leases: leases, name: name, holder: holder, ttl: ttl, work: work, log: log}
}

// State is what /readyz shows of an elected worker.
type State struct {
	Role   string // RoleActive or RoleStandby
	Leader string // the holder last seen, this instance or another; "" when unknown
	Err    error  // why the worker last failed, until it runs again; nil when it did not
	Aside  error  // why the worker stepped down (wraps ErrStepDown), until it runs again; nil when it did not
	// Epoch is the lease's epoch of this instance's last take (store.Fence):
	// while Role is RoleActive, the epoch of every write the worker makes;
	// 0 before the first take.
	Epoch int64
	// Fenced counts the worker's runs that a refused write
	// (store.ErrFenced) ended: another instance had taken the lease.
	Fenced int64
}

// Serve takes turns between standing by and working until ctx ends (then
// it returns nil) or the worker fails (then it gives the lease up, so that
// a standby can take over at once, and returns the error, prefixed with
// the worker's name, for the supervisor). A worker that steps down
// (StepDown) is no failure: Serve gives the lease up, stands aside for the
// time asked (State.Aside says why) and then competes for the lease again.
// A panic of the worker is recorded in State and passed on.
func (e *Elected) Serve(ctx context.Context) (err error) {
	e.setRole(RoleStandby, "")
	defer func() {
		// The supervisor recovers a panic; record it on the way.
		if p := recover(); p != nil {
			e.fail(fmt.Errorf("panic: %v", p))
			panic(p)
		}
		if err != nil {
			e.fail(err)
		}
	}()
	every := e.ttl / 3
	for {
		sent := time.Now()
		var (
			epoch int64
			err   error
		)
		if e.wanted() {
			epoch, err = e.try(ctx)
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			e.log.Warn("lease: cannot reach the store", zap.String("lease", e.name), zap.Error(err))
		case epoch > 0:
			err := e.hold(ctx, sent, epoch)
			var sd *stepDown
			if errors.As(err, &sd) {
				e.log.Warn("lease given up: this instance stands aside so that another takes over",
					zap.String("lease", e.name), zap.Duration("aside", sd.aside), zap.Error(sd.cause))
				e.mu.Lock()
				e.asideUntil = time.Now().Add(sd.aside)
				e.mu.Unlock()
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(sd.aside):
				}
				continue
			}
			if err != nil {
				return err
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		case <-e.nudge: // nil for a whole worker: never
		}
	}
}

// wanted reports whether this instance should hold the lease now: always
// for a whole worker, as its balancer says for a shard.
func (e *Elected) wanted() bool { return e.want == nil || e.want() }

// standingAside reports whether the worker stepped down and still stands
// aside.
func (e *Elected) standingAside() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return time.Now().Before(e.asideUntil)
}

// try takes or renews the lease within a third of its ttl, and returns
// its epoch when this instance holds it, 0 when it does not.
func (e *Elected) try(ctx context.Context) (int64, error) {
	sent := time.Now()
	actx, cancel := context.WithTimeout(ctx, e.ttl/3)
	defer cancel()
	epoch, err := e.leases.Acquire(actx, e.name, e.holder, e.ttl)
	if err != nil {
		return 0, err
	}
	leader := e.holder
	if epoch == 0 {
		if leader, err = e.leases.Holder(actx, e.name); err != nil {
			leader = ""
		}
	}
	e.mu.Lock()
	e.leader, e.seen = leader, sent
	e.mu.Unlock()
	return epoch, nil
}

// hold runs the worker while the lease taken at sent, at epoch, lasts.
func (e *Elected) hold(ctx context.Context, sent time.Time, epoch int64) error {
	lctx := newLeaseContext(ctx, sent.Add(e.ttl))
	defer lctx.stop()
	e.holdUntil(sent.Add(e.ttl))
	e.setRole(RoleActive, e.holder)
	e.fail(nil)
	e.standAside(nil)
	e.mu.Lock()
	e.epoch = epoch
	e.mu.Unlock()
	e.log.Info("lease taken: this instance runs the worker", zap.String("lease", e.name), zap.String("holder", e.holder),
		zap.Int64("epoch", epoch))
	wctx := store.WithFence(lctx, store.Fence{Lease: e.name, Epoch: epoch, Shard: e.shard})
	done := make(chan error, 1)
	go func() { done <- e.work(wctx) }()

	renew := time.NewTicker(e.ttl / 3)
	defer renew.Stop()
	handing := false // the worker is stopping to hand the shard over
	handOver := func() {
		if !handing && !e.wanted() {
			handing = true
			lctx.lose(fmt.Errorf("%w: %w", ErrLeaseLost, errHandedOver))
		}
	}
	for {
		select {
		case <-e.nudge: // nil for a whole worker: never
			handOver()
		case err := <-done:
			e.setRole(RoleStandby, "")
			if rerr := e.leases.Release(context.WithoutCancel(ctx), e.name, e.holder); rerr != nil {
				e.log.Warn("lease: release", zap.String("lease", e.name), zap.Error(rerr))
			}
			if errors.Is(err, ErrStepDown) && ctx.Err() == nil {
				e.standAside(err)
				return err
			}
			if errors.Is(err, store.ErrFenced) {
				// Another instance took the lease and bumped its epoch: a
				// lost lease, which the store noticed before the renewal.
				e.mu.Lock()
				e.fenced++
				e.mu.Unlock()
				lctx.lose(fmt.Errorf("%w: %w", ErrLeaseLost, err))
				err = nil
			}
			if err != nil && !errors.Is(err, ErrLeaseLost) && ctx.Err() == nil {
				return fmt.Errorf("%s: %w", e.name, err)
			}
			switch {
			case handing:
				e.log.Info("lease handed over: the balance gives it to another instance", zap.String("lease", e.name))
			case ctx.Err() == nil:
				e.log.Warn("lease lost: this instance stands by", zap.String("lease", e.name), zap.Error(context.Cause(lctx)))
			}
			return nil
		case <-renew.C:
			if handOver(); handing {
				continue // the worker is stopping; the lease is released when it has
			}
			sent := time.Now()
			got, err := e.try(ctx)
			switch {
			case err == nil && got == epoch:
				if lctx.extend(sent.Add(e.ttl)) {
					e.holdUntil(sent.Add(e.ttl))
				}
			case err == nil && got != 0: // lapsed and taken again: the worker's fence is stale
				lctx.lose(fmt.Errorf("%w: taken again at epoch %d after epoch %d lapsed", ErrLeaseLost, got, epoch))
			case err == nil:
				lctx.lose(fmt.Errorf("%w: %s holds it now", ErrLeaseLost, e.leaderSeen()))
			default: // keep working until the deadline; the next renewal may get through
				e.log.Warn("lease: renewal failed", zap.String("lease", e.name), zap.Error(err))
			}
		}
	}
}

func (e *Elected) setRole(role, leader string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.role = role
	if leader != "" {
		e.leader = leader
	}
}

// holdUntil records the deadline of the lease this instance holds.
func (e *Elected) holdUntil(deadline time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.until = deadline
}

// standAside records why the worker stepped down; nil clears it.
func (e *Elected) standAside(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.aside = err
}

func (e *Elected) leaderSeen() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.leader == "" {
		return "another instance"
	}
	return e.leader
}

// fail records why the worker failed; nil clears it.
func (e *Elected) fail(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.err = err
	if err != nil {
		e.role = RoleStandby
	}
}

// Name returns the worker's name, which is also its lease's.
func (e *Elected) Name() string { return e.name }

// String names the worker in its supervisor's events (without it, they
// would print the whole struct, racing with the fields it changes).
func (e *Elected) String() string { return e.name }

// State returns this instance's role, the holder it last saw, and why the
// worker last failed or stepped down.
//
// The role follows the lease's own deadline, not only the worker's
// return: a holder whose renewals did not get through is a standby from
// the moment its deadline passes (its worker's context ends then too,
// though the worker may take a while to return), so it never shows itself
// active beside its successor, which cannot take the lease before that
// deadline. A holder seen more than a ttl ago is not shown: the lease may
// have changed hands since.
func (e *Elected) State() State {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := State{Role: e.role, Leader: e.leader, Err: e.err, Aside: e.aside, Epoch: e.epoch, Fenced: e.fenced}
	now := time.Now()
	if st.Role == RoleActive && !now.Before(e.until) {
		st.Role = RoleStandby
		if st.Leader == e.holder {
			st.Leader = ""
		}
	}
	if st.Role == RoleStandby && now.Sub(e.seen) > e.ttl {
		st.Leader = ""
	}
	return st
}

// leaseContext is a worker's context while its lease lasts. Err checks the
// deadline itself, not only the timer that closes Done, so that a process
// that resumes after a pause sees the lease gone at its very next check,
// before its timers have had a chance to run.
type leaseContext struct {
	context.Context // the parent, for Value and Deadline

	mu       sync.Mutex
	deadline time.Time
	timer    *time.Timer
	done     chan struct{}
	err      error
	stopped  chan struct{}
}

func newLeaseContext(parent context.Context, deadline time.Time) *leaseContext {
	c := &leaseContext{Context: parent, deadline: deadline, done: make(chan struct{}), stopped: make(chan struct{})}
	c.timer = time.AfterFunc(time.Until(deadline), c.expire)
	go func() {
		select {
		case <-parent.Done():
			c.end(context.Cause(parent))
		case <-c.stopped:
		}
	}()
	return c
}

func (c *leaseContext) Done() <-chan struct{} { return c.done }

// Err is non-nil once the parent ended, the lease was lost, or its
// deadline passed.
func (c *leaseContext) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil && !time.Now().Before(c.deadline) {
		c.endLocked(fmt.Errorf("%w: not renewed before its deadline", ErrLeaseLost))
	}
	return c.err
}

// extend moves the deadline on after a renewal, unless the context ended;
// it reports whether it did.
func (c *leaseContext) extend(deadline time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || !time.Now().Before(c.deadline) {
		return false // too late: the lease lapsed in between, the worker must stop
	}
	c.deadline = deadline
	c.timer.Reset(time.Until(deadline))
	return true
}

func (c *leaseContext) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil && !time.Now().Before(c.deadline) {
		c.endLocked(fmt.Errorf("%w: not renewed before its deadline", ErrLeaseLost))
	}
}

func (c *leaseContext) lose(cause error) { c.end(cause) }

func (c *leaseContext) end(cause error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.endLocked(cause)
}

func (c *leaseContext) endLocked(cause error) {
	if c.err != nil {
		return
	}
	if cause == nil {
		cause = context.Canceled
	}
	c.err = cause
	close(c.done)
}

// stop releases the timer and the goroutine watching the parent.
func (c *leaseContext) stop() {
	c.timer.Stop()
	close(c.stopped)
}
