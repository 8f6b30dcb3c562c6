package api

import (
	"errors"
	"net/http"
	"os"

	"go.uber.org/zap/zapcore"
)

// The outcomes of an answer's delivery, as the access log names them.
// The status logged is the one the handler sent; the outcome says whether
// the client got it.
const (
	delivered    = "delivered"
	writeTimeout = "write_timeout" // the server's WriteTimeout passed while the answer was written
	writeFailed  = "write_failed"  // the connection broke (the client went away)
)

// delivery returns the outcome of an answer whose first failed write was
// failed (nil when none failed), and the level to log it at: a write
// timeout is the server's slowness or a client too slow to read, which an
// operator should see at the default level; a client gone is its own
// business.
func delivery(failed error) (string, zapcore.Level) {
	switch {
	case failed == nil:
		return delivered, zapcore.InfoLevel
	case errors.Is(failed, os.ErrDeadlineExceeded):
		return writeTimeout, zapcore.WarnLevel
	default:
		return writeFailed, zapcore.InfoLevel
	}
}

// undelivered returns the failed write of an answer already under way on
// w, or nil. Past such a failure nothing more reaches the client: an error
// the handler returns because of it (its write's) is not answered, nor
// taken for the handler's own failure (a 500).
func undelivered(w http.ResponseWriter) error {
	for {
		if rec, ok := w.(*statusRecorder); ok && rec.failed != nil {
			return rec.failed
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return nil
		}
		w = u.Unwrap()
	}
}
