package cql

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/gocql/gocql"

	"github.com/orderd/orderd/internal/store"
)

// probeLease is the lease the write probe takes while appends fail: a
// lightweight transaction, as an append is.
const probeLease = "orderd:write-probe"

// serverCode returns the error code of the server's answer that err holds,
// if any. The driver's error frames (RequestErrWriteTimeout, …) carry it
// through GetCode: in scylladb/gocql they no longer implement
// gocql.RequestError (Code), so an errors.As on that interface alone never
// matches a real answer. Both are looked for.
func serverCode(err error) (int, bool) {
	var fe interface {
		error
		GetCode() int
	}
	if errors.As(err, &fe) {
		return fe.GetCode(), true
	}
	var re gocql.RequestError
	if errors.As(err, &re) {
		return re.Code(), true
	}
	return 0, false
}

// unavailable reports whether err is the cluster's failure rather than the
// request's: not enough live replicas, an overloaded, bootstrapping or
// stopping node (Cassandra answers "Server is shutting down" as
// overloaded), a replica timeout or failure, a server error, no connection
// to any host, no answer within Config.Timeout, or a deadline of ours that
// passed (context.DeadlineExceeded), a connection that broke under the
// request, or ScyllaDB's rate limit. A refused condition (a conflict) is
// never one: it is no error at all. ctx is the request's: a cancellation
// is the client's only when ctx ended.
func unavailable(ctx context.Context, err error) bool {
	var limited *gocql.RequestErrRateLimitReached // ScyllaDB's per-partition limit, a code of its own
	if errors.As(err, &limited) {
		return true
	}
	if code, ok := serverCode(err); ok {
		switch code {
		case gocql.ErrCodeUnavailable, gocql.ErrCodeOverloaded, gocql.ErrCodeBootstrapping,
			gocql.ErrCodeWriteTimeout, gocql.ErrCodeReadTimeout, gocql.ErrCodeWriteFailure,
			gocql.ErrCodeReadFailure, gocql.ErrCodeCASWriteUnknown, gocql.ErrCodeCDCWriteFailure,
			gocql.ErrCodeServer, gocql.ErrCodeTruncate:
			return true
		}
		return false
	}
	if errors.Is(err, context.Canceled) {
		// ctx ended: the client went away, not the cluster's failure.
		// Otherwise the driver cancelled: a connection it closes (its
		// host marked down, its pool shrunk) cancels its own context,
		// under which the preparation of a statement runs that every
		// request needing it waits for, and they all get that
		// cancellation (TestCassandraLostE2E saw a time-travel read
		// answer 500 so on a stalled node).
		return ctx.Err() == nil
	}
	// A connection that failed under the request (a heartbeat that went
	// unanswered, a reset, an I/O error) reaches the caller as the driver's
	// QueryError around an error of no type of its own ("gocql: heartbeat
	// failed"): the cluster's failure too. A value the driver could not
	// encode is a QueryError as well, and ours.
	var qe *gocql.QueryError
	if errors.As(err, &qe) {
		var me gocql.MarshalError
		return !errors.As(err, &me)
	}
	// The same failure without a QueryError around it: the socket's own
	// error (a reset, a refused dial, a connection the driver closed under
	// the request), as the requests in flight on a connection the driver
	// gives up may get it.
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	for _, target := range []error{gocql.ErrNoConnections, gocql.ErrHostDown, gocql.ErrNoPool,
		gocql.ErrNoConnectionsInPool, gocql.ErrTimeoutNoResponse, gocql.ErrConnectionClosed,
		gocql.ErrTooManyTimeouts, gocql.ErrNoStreams, gocql.ErrUnavailable, gocql.ErrSessionNotReady,
		gocql.ErrNoConnectionsStarted, gocql.ErrHostQueryFailed, context.DeadlineExceeded} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// asUnavailable returns err wrapping store.ErrUnavailable when it is the
// cluster's failure (unavailable), and err unchanged otherwise: for the
// reads of the read models, which count no fault in the store's health.
func asUnavailable(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, store.ErrUnavailable) || !unavailable(ctx, err) {
		return err
	}
	return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
}

// fault wraps the cluster's failure of op in store.ErrUnavailable and
// counts it. Any fault, a read's too, opens an episode of the store's
// health, which makes /readyz report the store down at once (until its
// write probe succeeds): reads and writes go to the same replicas at the
// same consistency, so a read the cluster cannot serve says as much about
// this instance's reach as a failed write. Other errors come back
// unchanged.
func (s *Store) fault(ctx context.Context, op string, err error) error {
	if err == nil || errors.Is(err, store.ErrUnavailable) || !unavailable(ctx, err) {
		return err
	}
	err = fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	s.health.Fault(op, true, err)
	return err
}

// oneRetry is the driver's retry policy for every request but an
// append's: one retry at most, on the next host (an LWT's on the same),
// and none after a timeout, the client's or the server's. A request the
// cluster cannot serve thus ends within one Config.Timeout: a node that
// does not answer (stalled, cut off) costs the timeout once, not twice,
// and a node that refuses at once (down, "Server is shutting down",
// overloaded, not enough replicas) is tried once more elsewhere. A
// request that may have run and is not idempotent is never retried.
type oneRetry struct{}

func (oneRetry) Attempt(q gocql.RetryableQuery) bool    { return q.Attempts() <= 1 }
func (oneRetry) AttemptLWT(q gocql.RetryableQuery) bool { return q.Attempts() <= 1 }

func (oneRetry) GetRetryType(err error) gocql.RetryType { return retryType(err, gocql.RetryNextHost) }

func (oneRetry) GetRetryTypeLWT(err error) gocql.RetryType { return retryType(err, gocql.Retry) }

func retryType(err error, retry gocql.RetryType) gocql.RetryType {
	var executed *gocql.QueryError
	if errors.As(err, &executed) && executed.PotentiallyExecuted() && !executed.IsIdempotent() {
		return gocql.Rethrow
	}
	if timedOut(err) {
		return gocql.Rethrow
	}
	return retry
}

// timedOut reports whether err is a timeout: no answer within the
// client's timeout or a deadline, or the server's read or write timeout.
func timedOut(err error) bool {
	if errors.Is(err, gocql.ErrTimeoutNoResponse) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	code, ok := serverCode(err)
	return ok && (code == gocql.ErrCodeReadTimeout || code == gocql.ErrCodeWriteTimeout)
}

// CheckWrite returns nil while appends succeed, and an error wrapping
// store.ErrUnavailable from one the cluster failed until one succeeds
// again. While appends fail it probes, at most every store.ProbeEvery,
// with a lightweight transaction on a lease of its own.
func (s *Store) CheckWrite(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return s.health.Check(ctx, func(ctx context.Context) error {
		_, err := s.Acquire(ctx, probeLease, "probe", time.Second)
		return err
	})
}

// StorageFaults returns the cluster's failures counted since Open, by
// operation: append, and cql for every other request.
func (s *Store) StorageFaults() map[string]int64 { return s.health.Faults() }

var _ store.WriteHealth = (*Store)(nil)
