package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/relay"
)

// problem is an RFC 9457 problem details object. Code is the stable,
// machine-readable name of the error; Type is derived from it.
type problem struct {
	Type          string `json:"type"`
	Title         string `json:"title"`
	Status        int    `json:"status"`
	Detail        string `json:"detail"`
	Instance      string `json:"instance,omitempty"`
	Code          string `json:"code"`
	Field         string `json:"field,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
}

// Kinds of error that only the HTTP layer raises, as the Kind of an
// *aggregate.Error so that every 4xx carries a code. Domain errors come from
// aggregate; they all meet in statusOf.
var (
	errBodyTooLarge = errors.New("body too large")
	errMediaType    = errors.New("unsupported media type")
	errNoRoute      = errors.New("no such route")
	errNoMethod     = errors.New("method not allowed")
)

func httpError(kind error, code, detail string) error {
	return &aggregate.Error{Kind: kind, Code: code, Detail: detail}
}

// statusOf is the only place that knows which error means which status.
func statusOf(err error) int {
	switch {
	case errors.Is(err, aggregate.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, aggregate.ErrNotFound), errors.Is(err, errNoRoute), errors.Is(err, relay.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, errUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, errNoMethod):
		return http.StatusMethodNotAllowed
	case errors.Is(err, aggregate.ErrRejected), errors.Is(err, aggregate.ErrExists):
		return http.StatusConflict
	case errors.Is(err, relay.ErrReplayFailed):
		// Not 502: the broker answered, and refused the event for good
		// (too large, a topic it will not take). Repeating the request
		// cannot succeed until the operator changes something, which is
		// what 409 says; a 5xx would invite blind retries, and this is
		// not the server failing.
		return http.StatusConflict
	case errors.Is(err, aggregate.ErrStale):
		return http.StatusPreconditionFailed
	case errors.Is(err, errBodyTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errMediaType):
		return http.StatusUnsupportedMediaType
	case errors.Is(err, readmodel.ErrBehind), errors.Is(err, relay.ErrBrokerUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// writeError answers err as a problem. Only 5xx are logged as errors, and a
// 500 never shows err's text to the client.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away (for example during a min_version wait):
		// nobody reads the answer, and it is not the server's failure.
		logger(r.Context()).Debug("client gone", zap.Error(err))
		// nginx's "client closed request": nobody reads it, but the access
		// log and the command metrics then do not count it as a success.
		w.WriteHeader(499)
		return
	}
	status := statusOf(err)
	p := problem{
		Status:        status,
		Title:         http.StatusText(status),
		Instance:      r.URL.Path,
		CorrelationID: correlationID(r.Context()).String(),
	}
	var de *aggregate.Error
	switch {
	case errors.As(err, &de) && status != http.StatusInternalServerError:
		p.Code, p.Field, p.Detail = de.Code, de.Field, de.Detail
	case status == http.StatusServiceUnavailable:
		p.Code, p.Detail = "projection_behind", "the read model has not reached the requested version yet; retry shortly"
	default:
		p.Code, p.Detail = "internal", "the server failed to handle the request; the correlation id identifies it in the logs"
		logger(r.Context()).Error("request failed", zap.Error(err), zap.Int("status", status))
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", retryAfter(err))
	}
	p.Type = "urn:orderd:problem:" + p.Code
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(p)
}

// retryAfter is the Retry-After of a 503, in seconds: a projection catches
// up in milliseconds, while a broker that timed out a replay is likely to
// be down for a while yet.
func retryAfter(err error) string {
	if errors.Is(err, relay.ErrBrokerUnavailable) {
		return "10"
	}
	return "1"
}
