package cql

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"syscall"
	"testing"
	"unsafe"

	"github.com/gocql/gocql"

	"github.com/orderd/orderd/internal/store"
)

// frameError returns the driver's own error for a server answer: a value
// of type T (one of the RequestErr… types, or the bare error frame the
// driver returns for overloaded, server, syntax… answers when T is nil)
// whose frame carries code and message, as the driver's frame parser makes
// it. The frame type is internal to the driver; reflection sets its fields.
func frameError[T any](code int, msg string) error {
	holder := reflect.New(reflect.TypeFor[gocql.RequestErrUnavailable]()).Elem()
	frameType := holder.FieldByName("ErrorFrame").Type()
	frame := reflect.New(frameType).Elem()
	frame.FieldByName("Code").SetInt(int64(code))
	frame.FieldByName("Message").SetString(msg)
	if reflect.TypeFor[T]() == reflect.TypeFor[struct{}]() {
		return frame.Interface().(error)
	}
	e := reflect.New(reflect.TypeFor[T]())
	e.Elem().FieldByName("ErrorFrame").Set(frame)
	return e.Interface().(error)
}

// queryError returns the driver's QueryError around cause, as its
// connection makes it when the connection fails under a request (the
// fields are the driver's own; reflection sets them).
func queryError(cause error, executed bool) error {
	qe := &gocql.QueryError{}
	v := reflect.ValueOf(qe).Elem()
	for name, val := range map[string]any{"err": cause, "potentiallyExecuted": executed} {
		f := v.FieldByName(name)
		reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Set(reflect.ValueOf(val))
	}
	return qe
}

// marshalError returns the driver's own error for a value it cannot encode.
func marshalError() error {
	_, err := gocql.Marshal(gocql.NewNativeType(4, gocql.TypeInt), "not a number")
	return err
}

// TestUnavailable: the classification of the driver's errors, as the
// driver's frame parser makes them, wrapped:
// the cluster's failures are store.ErrUnavailable (503), the request's are
// not, and the uncertain ones of an append go to settle.
func TestUnavailable(t *testing.T) {
	for _, c := range []struct {
		name                 string
		err                  error
		unavailable, unknown bool
	}{
		{"unavailable replicas", frameError[gocql.RequestErrUnavailable](gocql.ErrCodeUnavailable, "Cannot achieve consistency level QUORUM"), true, false},
		{"shutting down", frameError[struct{}](gocql.ErrCodeOverloaded, "Server is shutting down"), true, false},
		{"overloaded", frameError[struct{}](gocql.ErrCodeOverloaded, "Too many in flight requests"), true, false},
		{"bootstrapping", frameError[struct{}](gocql.ErrCodeBootstrapping, "Cannot read from a bootstrapping node"), true, false},
		{"server error", frameError[struct{}](gocql.ErrCodeServer, "java.lang.AssertionError"), true, true},
		{"write timeout (CAS)", frameError[gocql.RequestErrWriteTimeout](gocql.ErrCodeWriteTimeout, "Operation timed out - received only 0 responses."), true, true},
		{"read timeout", frameError[gocql.RequestErrReadTimeout](gocql.ErrCodeReadTimeout, "Operation timed out"), true, true},
		{"write failure", frameError[gocql.RequestErrWriteFailure](gocql.ErrCodeWriteFailure, "Operation failed"), true, true},
		{"read failure", frameError[gocql.RequestErrReadFailure](gocql.ErrCodeReadFailure, "Operation failed"), true, true},
		{"CAS write unknown", frameError[gocql.RequestErrCASWriteUnknown](gocql.ErrCodeCASWriteUnknown, "CAS operation result is unknown"), true, true},
		{"rate limit", frameError[gocql.RequestErrRateLimitReached](0x4321, "Per-partition rate limit reached"), true, false},
		{"no answer in time", gocql.ErrTimeoutNoResponse, true, true},
		{"no hosts", gocql.ErrNoConnections, true, false},
		{"host down", gocql.ErrHostDown, true, false},
		{"connection closed", gocql.ErrConnectionClosed, true, true},
		{"our deadline", context.DeadlineExceeded, true, true},
		{"heartbeat failed", queryError(errors.New("gocql: heartbeat failed"), true), true, true},
		{"connection reset", queryError(fmt.Errorf("read tcp 10.231.0.100:4242->10.231.0.2:29042: %w", syscall.ECONNRESET), true), true, true},
		{"connection reset, bare", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, true, true},
		{"connection closed under the request, bare", fmt.Errorf("read tcp 127.0.0.1:4242->127.0.0.1:9042: %w", net.ErrClosed), true, true},
		{"dial refused, bare", fmt.Errorf("dial tcp 127.0.0.1:9042: %w", syscall.ECONNREFUSED), true, true},
		{"value not encodable", queryError(marshalError(), false), false, true},
		{"syntax", frameError[struct{}](gocql.ErrCodeSyntax, "line 1:0 no viable alternative"), false, false},
		{"invalid", frameError[struct{}](gocql.ErrCodeInvalid, "unconfigured table"), false, false},
		{"unauthorized", frameError[struct{}](gocql.ErrCodeUnauthorized, "no permission"), false, false},
	} {
		wrapped := fmt.Errorf("scylla: read x: %w", c.err)
		if got := unavailable(t.Context(), wrapped); got != c.unavailable {
			t.Errorf("%s (%T): unavailable = %v, want %v", c.name, c.err, got, c.unavailable)
		}
		if got := uncertain(wrapped); got != c.unknown {
			t.Errorf("%s (%T): uncertain = %v, want %v", c.name, c.err, got, c.unknown)
		}
	}

	// A cancellation is the client's when its context ended, and then not
	// the cluster's failure; while the client still waits, it is the
	// driver's: a connection it closed cancels the preparation that the
	// requests needing a statement all wait for.
	gone, leave := context.WithCancel(t.Context())
	leave()
	for _, c := range []struct {
		name        string
		ctx         context.Context
		err         error
		unavailable bool
	}{
		{"client went away", gone, context.Canceled, false},
		{"client went away, in the driver", gone, queryError(context.Canceled, true), false},
		{"a closed connection's preparation", t.Context(), queryError(context.Canceled, true), true},
	} {
		wrapped := fmt.Errorf("scylla: read x: %w", c.err)
		if got := unavailable(c.ctx, wrapped); got != c.unavailable {
			t.Errorf("%s: unavailable = %v, want %v", c.name, got, c.unavailable)
		}
		if !uncertain(wrapped) {
			t.Errorf("%s: not uncertain: an append so cancelled may have run", c.name)
		}
	}
}

// TestUnavailableLive: real answers of a real node, through the driver's
// executor: a consistency the single node cannot reach is the cluster's
// failure (store.ErrUnavailable from fault), which makes the store's health
// down until its write probe succeeds; a syntax error is neither.
func TestUnavailableLive(t *testing.T) {
	s := mustOpen(t, testConfig(t), nil)
	err := s.sess.Session.Query(`SELECT event_id FROM events WHERE aggregate_id = ?`, gocql.UUID{}).
		WithContext(ctxFor(t)).Consistency(gocql.Three).Exec()
	if err := s.fault(ctxFor(t), "cql", err); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("a read at THREE on one node: %v (%T), want ErrUnavailable", err, errors.Unwrap(err))
	}
	// A read's fault, not only a write's, makes the store's health down
	// (so /readyz says so at once), until the write probe succeeds.
	if !s.health.Down() {
		t.Error("the store's health is up after a read the cluster could not serve")
	}
	if err := s.CheckWrite(ctxFor(t)); err != nil || s.health.Down() {
		t.Errorf("CheckWrite on a healthy node after the fault: %v (down %v), want the probe to end the episode", err, s.health.Down())
	}
	err = s.sess.Session.Query(`SELEKT 1`).WithContext(ctxFor(t)).Exec()
	if err == nil || s.fault(ctxFor(t), "cql", err) != err {
		t.Errorf("a syntax error: %v, want itself, unwrapped", err)
	}
	if s.health.Down() {
		t.Error("a syntax error made the store's health down")
	}
}

// TestOneRetry: the retry policy of every request but an append's retries
// a fast refusal once elsewhere, and never a timeout (which would hold the
// request for a second timeout) nor a request that may have run and is not
// idempotent.
func TestOneRetry(t *testing.T) {
	for _, c := range []struct {
		name      string
		err       error
		want, lwt gocql.RetryType
	}{
		{"no answer in time", fmt.Errorf("read: %w", gocql.ErrTimeoutNoResponse), gocql.Rethrow, gocql.Rethrow},
		{"a deadline of ours", context.DeadlineExceeded, gocql.Rethrow, gocql.Rethrow},
		{"server read timeout", frameError[gocql.RequestErrReadTimeout](gocql.ErrCodeReadTimeout, "timeout"), gocql.Rethrow, gocql.Rethrow},
		{"server write timeout", frameError[gocql.RequestErrWriteTimeout](gocql.ErrCodeWriteTimeout, "timeout"), gocql.Rethrow, gocql.Rethrow},
		{"shutting down", frameError[struct{}](gocql.ErrCodeOverloaded, "Server is shutting down"), gocql.RetryNextHost, gocql.Retry},
		{"not enough replicas", frameError[gocql.RequestErrUnavailable](gocql.ErrCodeUnavailable, "unavailable"), gocql.RetryNextHost, gocql.Retry},
		{"connection closed", gocql.ErrConnectionClosed, gocql.RetryNextHost, gocql.Retry},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := (oneRetry{}).GetRetryType(c.err); got != c.want {
				t.Errorf("GetRetryType = %v, want %v", got, c.want)
			}
			if got := (oneRetry{}).GetRetryTypeLWT(c.err); got != c.lwt {
				t.Errorf("GetRetryTypeLWT = %v, want %v", got, c.lwt)
			}
		})
	}
}
