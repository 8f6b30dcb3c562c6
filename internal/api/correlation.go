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

const (
	correlationKey ctxKey = iota
	loggerKey
	commandKey
)

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
		text := id.String()
		// Lazily: the fields are encoded only if the request logs, which
		// below info level most do not. The trace id is that of the span
		// traced started (see tracing.go).
		fields := []zap.Field{zap.String("correlation_id", text)}
		if span := trace.SpanFromContext(r.Context()); span.SpanContext().IsValid() {
			fields = append(fields, zap.Stringer("trace_id", span.SpanContext().TraceID()))
			if span.IsRecording() {
				span.SetAttributes(attribute.String("orderd.correlation_id", text))
			}
		}
		log := s.log.WithLazy(fields...)
		ctx := context.WithValue(r.Context(), correlationKey, id)
		ctx = context.WithValue(ctx, loggerKey, log)
		r = r.WithContext(ctx)
		w.Header().Set("X-Correlation-ID", text)

		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		if bad != nil {
			writeError(rec, r, bad)
		} else {
			next.ServeHTTP(rec, r)
		}
		outcome, level := delivery(rec.failed)
		if ce := log.Check(level, "request"); ce != nil {
			ce.Write(zap.String("method", r.Method), zap.String("path", requestPath(r)),
				zap.Int("status", rec.status), zap.String("outcome", outcome), zap.Duration("duration", time.Since(start)))
		}
	})
}

func correlationID(ctx context.Context) uuid.UUID {
	id, _ := ctx.Value(correlationKey).(uuid.UUID)
	return id
}

func logger(ctx context.Context) *zap.Logger {
	if l, ok := ctx.Value(loggerKey).(*zap.Logger); ok {
		return l
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
