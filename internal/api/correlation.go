package api

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
)

type ctxKey int

// requestKey is the context key of a request's *requestInfo.
const requestKey ctxKey = 0

// requestInfo is what correlate and command record about a request, in one
// context value: one allocation, and one copy of the request, instead of
// one of each per value. Its logger is made only when something logs
// through it, which most requests never do.
type requestInfo struct {
	id      uuid.UUID
	text    string // id, as text
	base    *zap.Logger
	trace   trace.SpanContext // of the request's span, when valid
	command string            // the command's name, set by its route (see command)
}

// fields are the request's logging fields: its correlation id and, when
// the request has a span, the trace id.
func (i *requestInfo) fields() []zap.Field {
	fields := make([]zap.Field, 1, 2)
	fields[0] = zap.String("correlation_id", i.text)
	if i.trace.IsValid() {
		fields = append(fields, zap.Stringer("trace_id", i.trace.TraceID()))
	}
	return fields
}

// correlate gives every request a correlation id, from X-Correlation-ID when
// the client sent a UUID there (trace ids of 32 hex digits parse as one) or
// a new one, echoes it, and gives the request a logger that carries it. The
// id is stored in every event the request causes, so it must be a UUID; any
// other value is refused rather than silently replaced.
func (s *Server) correlate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := uuid.Nil
		var bad error
		if vals := r.Header.Values("X-Correlation-ID"); len(vals) > 0 {
			parsed, err := uuid.Parse(vals[0])
			if len(vals) > 1 || err != nil || parsed == uuid.Nil || (len(vals[0]) != 36 && len(vals[0]) != 32) {
				// An empty value is refused too: it is not taken for none.
				bad = invalid("invalid_correlation_id", "X-Correlation-ID",
					"X-Correlation-ID must be one UUID (or 32 hex digits), not the nil UUID, not %s", echo(strings.Join(vals, ", ")))
			} else {
				id = parsed
			}
		}
		if id == uuid.Nil {
			id = uuid.Must(uuid.NewV7())
		}
		info := &requestInfo{id: id, text: id.String(), base: s.log}
		// The trace id is that of the span traced started (see tracing.go).
		if span := trace.SpanFromContext(r.Context()); span.SpanContext().IsValid() {
			info.trace = span.SpanContext()
			if span.IsRecording() {
				span.SetAttributes(attribute.String("orderd.correlation_id", info.text))
			}
		}
		r = r.WithContext(context.WithValue(r.Context(), requestKey, info))
		w.Header()["X-Correlation-Id"] = []string{info.text}

		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		if bad != nil {
			writeError(rec, r, bad)
		} else {
			next.ServeHTTP(rec, r)
		}
		outcome, level := delivery(rec.failed)
		// Below info level most requests do not log: the fields are made
		// only for an entry that is written.
		if ce := s.log.Check(level, "request"); ce != nil {
			ce.Write(append(info.fields(), zap.String("method", r.Method), zap.String("path", requestPath(r)),
				zap.Int("status", rec.status), zap.String("outcome", outcome), zap.Duration("duration", time.Since(start)))...)
		}
	})
}

// requestOf is the request's info as correlate recorded it, or nil.
func requestOf(ctx context.Context) *requestInfo {
	i, _ := ctx.Value(requestKey).(*requestInfo)
	return i
}

func correlationID(ctx context.Context) uuid.UUID {
	if i := requestOf(ctx); i != nil {
		return i.id
	}
	return uuid.Nil
}

// logger is the request's logger: correlate's, with the request's
// correlation and trace ids.
func logger(ctx context.Context) *zap.Logger {
	if i := requestOf(ctx); i != nil {
		return i.base.WithLazy(i.fields()...)
	}
	return zap.NewNop()
}

// statusRecorder remembers the status written and the first write that
// failed, for the access log and the command metrics. The status is the
// first one written: net/http ignores later (superfluous) calls, so they
// are not what the client got.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool  // a header or body went out
	failed error // the first failed write: the client did not get the answer whole
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	r.wrote = true
	n, err := r.ResponseWriter.Write(p)
	if err != nil && r.failed == nil {
		r.failed = err
	}
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (to flush and
// set deadlines), as the event stream does.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
