package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/oidc"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/store"
)

// The kinds of error only the HTTP layer raises. Each is a row of problems.
var (
	errUnauthorized = errors.New("unauthorized")
	errNoRoute      = errors.New("no such route")
	errNotFound     = errors.New("not found") // a read of an id nothing is stored under
	errNoMethod     = errors.New("method not allowed")
	errNotReached   = errors.New("version not reached") // min_version above the stored version
	errBodyTooLarge = errors.New("body too large")
	errBodyTimeout  = errors.New("body timed out") // the body did not arrive within the server's ReadTimeout
	errMediaType    = errors.New("unsupported media type")
	errRebuildEnded = errors.New("rebuild ended")

	errStreamNotOffered = errors.New("event stream not offered") // a store with no global order
	errTooManyStreams   = errors.New("too many event streams")
	errRateLimited      = errors.New("rate limited") // a client that spent its quota; see RateLimiter
)

// problems is the one place that says which error means which status. An
// error is answered by the first row whose err it wraps; code is used when
// the error carries none of its own (an *aggregate.Error, of a domain kind
// or of one of the HTTP-only kinds above, may); retryAfter, when set, is
// sent as Retry-After (seconds). Errors matching no row are 500s.
var problems = []struct {
	err        error
	status     int
	code       string
	retryAfter string
}{
	{aggregate.ErrInvalid, http.StatusBadRequest, "invalid_request", ""},
	{errUnauthorized, http.StatusUnauthorized, "unauthorized", ""},
	{oidc.ErrInvalidToken, http.StatusUnauthorized, "invalid_token", ""},
	{errInsufficientScope, http.StatusForbidden, "insufficient_scope", ""},
	{errNoRoute, http.StatusNotFound, "not_found", ""},
	{errNotFound, http.StatusNotFound, "not_found", ""},
	{aggregate.ErrNotFound, http.StatusNotFound, "not_found", ""},
	{relay.ErrNotFound, http.StatusNotFound, "dead_letter_not_found", ""},
	{errKeyNotFound, http.StatusNotFound, "key_not_found", ""},
	{errKeyErased, http.StatusGone, "subject_erased", ""},
	{errNoMethod, http.StatusMethodNotAllowed, "method_not_allowed", ""},
	{aggregate.ErrRejected, http.StatusConflict, "invalid_transition", ""},
	{aggregate.ErrExists, http.StatusConflict, "already_exists", ""},
	{errNotReached, http.StatusConflict, "version_not_reached", ""},
	{errKeyReused, http.StatusUnprocessableEntity, "idempotency_key_reused", ""},
	{errKeyInFlight, http.StatusConflict, "idempotency_key_in_flight", "1"},
	// Not 502: the broker answered, and refused the event for good (too
	// large, a topic it will not take). Repeating the request cannot
	// succeed until the operator changes something, which is what 409
	// says; a 5xx would invite blind retries.
	{relay.ErrReplayFailed, http.StatusConflict, "replay_failed", ""},
	{readmodel.ErrRebuildRunning, http.StatusConflict, "rebuild_running", ""},
	{errRebuildEnded, http.StatusConflict, "rebuild_ended", ""},
	{store.ErrBackupTarget, http.StatusConflict, "backup_target_refused", ""},
	{store.ErrBackupRunning, http.StatusConflict, "backup_running", ""},
	// CQL has no online backup of its own: per-node snapshots, see
	// docs/operations.md.
	{store.ErrBackupUnsupported, http.StatusNotImplemented, "backup_not_supported", ""},
	{aggregate.ErrStale, http.StatusPreconditionFailed, "version_mismatch", ""},
	{errBodyTimeout, http.StatusRequestTimeout, "request_timeout", ""},
	{errBodyTooLarge, http.StatusRequestEntityTooLarge, "body_too_large", ""},
	{errMediaType, http.StatusUnsupportedMediaType, "unsupported_media_type", ""},
	// Retry-After is the client's own: the time its bucket takes to hold
	// a token again, set by RateLimiter.Middleware.
	{errRateLimited, http.StatusTooManyRequests, "rate_limited", ""},
	// The CQL backend has no global order to number a stream of all
	// events by: the server does not support the route, whatever is asked.
	{errStreamNotOffered, http.StatusNotImplemented, "stream_not_offered", ""},
	// A projection catches up in milliseconds; a broker that timed out a
	// replay is likely to be down for a while yet.
	{readmodel.ErrBehind, http.StatusServiceUnavailable, "projection_behind", "1"},
	// Too many reads wait for their version already: a slot frees within
	// the read wait (2 s).
	{readmodel.ErrTooManyWaiters, http.StatusServiceUnavailable, "too_many_waiters", "1"},
	// The identity provider's discovery document was not read yet: orderd
	// retries in the background (internal/oidc) and /readyz is down.
	{oidc.ErrUnavailable, http.StatusServiceUnavailable, "auth_unavailable", "5"},
	{relay.ErrBrokerUnavailable, http.StatusServiceUnavailable, "broker_unavailable", "10"},
	// Every event stream the server serves is open: one frees when a
	// client leaves.
	{errTooManyStreams, http.StatusServiceUnavailable, "too_many_streams", "5"},
	// A full disk, a read-only file system, an I/O error: the store cannot
	// write until the operator acts; /readyz says so meanwhile.
	{store.ErrUnavailable, http.StatusServiceUnavailable, "storage_unavailable", "5"},
}

// invalid is the refusal of input refused before any handler logic runs:
// the domain's own kind (aggregate.ErrInvalid), so that a 400 is one kind
// whoever refused it. field is a JSON pointer into the body, or the name of
// a header, query or path parameter.
func invalid(code, field, format string, args ...any) error {
	return aggregate.Invalid(code, field, format, args...)
}

// notFoundCodes are the codes of reads of an id nothing of that type is
// stored under, by aggregate type.
var notFoundCodes = map[string]string{
	aggregate.OrderType:    "order_not_found",
	aggregate.CustomerType: "customer_not_found",
}

// notFound is the problem of every read of an aggregate that does not exist.
func notFound(aggType string, id uuid.UUID) error {
	return &aggregate.Error{Kind: errNotFound, Code: notFoundCodes[aggType], Detail: fmt.Sprintf("%s %s does not exist", strings.ToLower(aggType), id)}
}

// problemJSON is an RFC 9457 problem details object. Code is the stable,
// machine-readable name of the error; Type is derived from it.
type problemJSON struct {
	Type          string `json:"type"`
	Title         string `json:"title"`
	Status        int    `json:"status"`
	Detail        string `json:"detail"`
	Instance      string `json:"instance,omitempty"`
	Code          string `json:"code"`
	Field         string `json:"field,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	// Head is the newest position of the event stream, in the refusal of
	// a start position beyond it (position_beyond_head).
	Head *int64 `json:"head,omitempty"`
}

// describe returns err's status, its body's code, field and detail, and
// the Retry-After to send (empty for none). A 500 never shows err's text.
func describe(err error) (status int, p problemJSON, retryAfter string) {
	status = http.StatusInternalServerError
	for _, row := range problems {
		if errors.Is(err, row.err) {
			status, p.Code, retryAfter = row.status, row.code, row.retryAfter
			break
		}
	}
	var de *aggregate.Error
	if bh := (*beyondHead)(nil); errors.As(err, &bh) {
		p.Head = &bh.head
	}
	switch {
	case status == http.StatusInternalServerError:
		p.Code, p.Detail = "internal", "the server failed to handle the request; the correlation id identifies it in the logs"
	case errors.Is(err, store.ErrOutcomeUnknown):
		p.Detail = "the storage did not answer in time; the command may or may not have been stored; read the resource, or retry with the same Idempotency-Key, after Retry-After seconds"
	case errors.Is(err, store.ErrUnavailable):
		// The driver's or SQLite's own words stay in the logs.
		p.Detail = "the storage cannot take this request now (a full or failing disk, or too few replicas); nothing was stored; retry after Retry-After seconds"
	case errors.As(err, &de):
		p.Field, p.Detail = de.Field, de.Detail
		if de.Code != "" {
			p.Code = de.Code
		}
	default:
		p.Detail = err.Error()
	}
	return status, p, retryAfter
}

// writeError answers err as a problem. Only 5xx are logged as errors.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	if failed := undelivered(w); failed != nil {
		// The answer was under way and its write failed (the write
		// timeout passed, or the client left): the access log says so.
		logger(r.Context()).Debug("answer not delivered", zap.Error(err), zap.NamedError("write", failed))
		return
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away (for example during a min_version wait):
		// nobody reads the answer, and it is not the server's failure.
		logger(r.Context()).Debug("client gone", zap.Error(err))
		// nginx's "client closed request": nobody reads it, but the access
		// log and the command metrics then do not count it as a success.
		w.WriteHeader(499)
		return
	}
	status, p, retryAfter := describe(err)
	switch {
	case errors.Is(err, store.ErrUnavailable):
		// The store logs each episode once; a line per request would flood.
		logger(r.Context()).Debug("request failed", zap.Error(err), zap.Int("status", status))
	case status >= 500:
		logger(r.Context()).Error("request failed", zap.Error(err), zap.Int("status", status))
	}
	p.Status, p.Title, p.Instance = status, http.StatusText(status), requestPath(r)
	p.Field, p.Detail = sanitize(p.Field, maxField), sanitize(p.Detail, maxDetail)
	p.CorrelationID = correlationID(r.Context()).String()
	p.Type = "urn:orderd:problem:" + p.Code
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	if status == http.StatusRequestTimeout {
		// The rest of the body may still come: the connection cannot carry
		// another request.
		w.Header().Set("Connection", "close")
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(p)
}
