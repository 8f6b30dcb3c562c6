package api

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/store"
)

// History is the part of the event store the API reads histories from:
// pages of one aggregate's events, and its type and version.
type History interface {
	store.Loader
	Version(ctx context.Context, aggregateID uuid.UUID) (aggregateType string, version int64, err error)
}

// The page sizes of GET …/events. A page is read whole before it is
// answered, so its size bounds what one request holds: 100 of the largest
// events (an order's 100 items, about 7.5 KB each) are under 1 MB, and the
// maximum, 1,000, under 8 MB.
const (
	defaultEventPage = 100
	maxEventPage     = 1000
)

// eventsPage is the body of GET …/events: one page, and the after_version
// of the next one, nil on the last.
type eventsPage struct {
	Events           []eventJSON `json:"events"`
	NextAfterVersion *int64      `json:"next_after_version"`
}

// events answers one page of the stored envelopes of one aggregate, upcast
// to the current schema: those after ?after_version (default 0), at most
// ?limit of them. When more follow, the body's next_after_version and a
// Link header (RFC 8288, rel="next") say where the next page starts. The
// ETag is the aggregate's version, as on every read of it.
func (s *Server) events(w http.ResponseWriter, r *http.Request, aggType string) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	limit, err := queryInt(r, "limit", 1, maxEventPage, defaultEventPage, fmt.Sprintf("a whole number from 1 to %d", maxEventPage))
	if err != nil {
		return err
	}
	after, err := queryInt(r, "after_version", 0, math.MaxInt64, 0, "a whole number of 0 or more")
	if err != nil {
		return err
	}
	// The version first, from the index: it tells an unknown id (or one of
	// another type, since ids are shared) without reading events, and
	// whether a page follows this one.
	typ, version, err := s.history.Version(r.Context(), id)
	switch {
	case err != nil:
		return err
	case version == 0 || typ != aggType:
		return notFound(aggType, id)
	case after > version:
		return &aggregate.Error{Kind: errNotReached, Code: "version_not_reached", Field: "after_version",
			Detail: fmt.Sprintf("%s %s is at version %d; after_version %d is beyond it", strings.ToLower(aggType), id, version, after)}
	}
	page, err := s.history.LoadPage(r.Context(), id, after, int(limit))
	if err != nil {
		return err
	}
	last := after
	if n := len(page); n > 0 {
		last = page[n-1].Sequence
		version = max(version, last) // an append since the version was read
	}
	out := eventsPage{Events: make([]eventJSON, len(page))}
	for i, e := range page {
		out.Events[i] = envelopeOut(e)
	}
	if last < version {
		out.NextAfterVersion = &last
		w.Header().Set("Link", nextLink(r, last, limit))
	}
	w.Header().Set("ETag", etag(version))
	return writeEvents(w, r, out)
}

// nextLink is the Link header of the page after sequence last: this
// route's path with after_version and limit, a reference relative to the
// request's own URL (RFC 8288 section 3.1).
func nextLink(r *http.Request, last, limit int64) string {
	return fmt.Sprintf(`<%s?after_version=%d&limit=%d>; rel="next"`, r.URL.EscapedPath(), last, limit)
}

// writeEvents writes a page event by event, so that the encoding of a page
// is never held whole beside the page itself. An event that cannot be
// encoded (a stored payload that is not JSON) is found after the status
// is sent: it is logged and the response aborted, so that the client
// sees a broken answer rather than a short one.
func writeEvents(w http.ResponseWriter, r *http.Request, p eventsPage) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	buf := []byte(`{"events":[`)
	for i, e := range p.Events {
		b, err := json.Marshal(e)
		if err != nil {
			logger(r.Context()).Error("history page aborted", zap.Stringer("aggregate_id", e.AggregateID),
				zap.Int64("sequence", e.Sequence), zap.Error(err))
			panic(http.ErrAbortHandler)
		}
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, b...)
		if _, err := w.Write(buf); err != nil {
			return err
		}
		buf = buf[:0]
	}
	buf = append(buf, `],"next_after_version":`...)
	if p.NextAfterVersion == nil {
		buf = append(buf, "null"...)
	} else {
		buf = strconv.AppendInt(buf, *p.NextAfterVersion, 10)
	}
	_, err := w.Write(append(buf, "}\n"...))
	return err
}
