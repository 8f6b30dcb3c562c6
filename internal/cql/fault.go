package cql

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gocql/gocql"

	"github.com/orderd/orderd/internal/store"
)

// probeLease is the lease the write probe takes while appends fail: a
// lightweight transaction, as an append is.
const probeLease = "orderd:write-probe"

// unavailable reports whether err is the cluster's failure rather than the
// request's: not enough live replicas, an overloaded or bootstrapping
// node, a replica timeout or failure, or no connection to any host. A
// refused condition (a conflict) is never one: it is no error at all.
func unavailable(err error) bool {
	var re gocql.RequestError
	if errors.As(err, &re) {
		switch re.Code() {
		case gocql.ErrCodeUnavailable, gocql.ErrCodeOverloaded, gocql.ErrCodeBootstrapping,
			gocql.ErrCodeWriteTimeout, gocql.ErrCodeReadTimeout, gocql.ErrCodeWriteFailure,
			gocql.ErrCodeReadFailure, gocql.ErrCodeCASWriteUnknown, gocql.ErrCodeCDCWriteFailure:
			return true
		}
		return false
	}
	for _, target := range []error{gocql.ErrNoConnections, gocql.ErrHostDown, gocql.ErrNoPool,
		gocql.ErrNoConnectionsInPool, gocql.ErrTimeoutNoResponse, gocql.ErrConnectionClosed,
		gocql.ErrTooManyTimeouts, gocql.ErrNoStreams, gocql.ErrUnavailable, gocql.ErrSessionNotReady} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// fault wraps the cluster's failure of op in store.ErrUnavailable and
// counts it; a write's opens an episode of the store's health. Other
// errors come back unchanged.
func (s *Store) fault(op string, write bool, err error) error {
	if err == nil || errors.Is(err, store.ErrUnavailable) || !unavailable(err) {
		return err
	}
	err = fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	s.health.Fault(op, write, err)
	return err
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
