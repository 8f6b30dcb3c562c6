package api

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
)

// pointInTime is where in an aggregate's history a read asks to look:
// ?as_of_version=N or ?as_of=<RFC 3339 time>. The zero value asks for the
// present, which the read models serve.
type pointInTime struct {
	version int64     // as_of_version, 0 when not given
	at      time.Time // as_of, when timed
	// timed: as_of was given. Not at.IsZero(): 0001-01-01T00:00:00Z is a
	// time like any other, before every aggregate.
	timed bool
}

func (p pointInTime) past() bool { return p.version > 0 || p.timed }

// readParams reads a GET of one aggregate's query: min_version, and
// as_of_version or as_of. Each value is checked first, then the
// combination: a past state is computed from the event store and never
// waits for the projection, so min_version means nothing beside it, and a
// version and a time could name two points.
func readParams(r *http.Request) (min int64, p pointInTime, err error) {
	if min, err = minVersion(r); err != nil {
		return 0, p, err
	}
	if p.version, err = queryInt(r, "as_of_version", 1, math.MaxInt64, 0, "a whole number of 1 or more"); err != nil {
		return 0, p, err
	}
	if p.at, p.timed, err = asOf(r); err != nil {
		return 0, p, err
	}
	switch {
	case p.version > 0 && p.timed:
		return 0, p, conflicting("as_of", "as_of_version and as_of cannot be given together: ask for a version or a time, not both")
	case min > 0 && p.version > 0:
		return 0, p, conflicting("as_of_version", "min_version cannot be given with as_of_version: a past state is read from the event store and never waits")
	case min > 0 && p.timed:
		return 0, p, conflicting("as_of", "min_version cannot be given with as_of: a past state is read from the event store and never waits")
	}
	return min, p, nil
}

func conflicting(field, detail string) error {
	return invalid("conflicting_query", field, "%s", detail)
}

// asOf reads ?as_of, an RFC 3339 date-time with its offset, and whether
// it was given. Go's parser differs from RFC 3339 in two ways: it takes a comma
// before the fraction, which is refused here, and not a leap second
// (23:59:60), which is taken as the instant after the second before it, as
// POSIX time does; 't' and 'z' are taken as RFC 3339 allows.
func asOf(r *http.Request) (time.Time, bool, error) {
	s, ok, err := query(r, "as_of")
	if err != nil || !ok {
		return time.Time{}, false, err
	}
	in, leap := strings.ToUpper(s), time.Duration(0)
	if len(in) > 19 && in[10] == 'T' && in[16:19] == ":60" {
		in, leap = in[:17]+"59"+in[19:], time.Second
	}
	t, perr := time.Parse(time.RFC3339, in)
	t = t.Add(leap)
	if perr != nil || strings.ContainsRune(s, ',') {
		hint := ""
		if strings.ContainsRune(s, ' ') {
			hint = " (a + in the offset must be sent as %2B)"
		}
		return time.Time{}, false, invalid("invalid_query", "as_of", "as_of must be an RFC 3339 date-time with an offset, such as 2024-11-05T10:00:00Z, not %s%s", echo(s), hint)
	}
	return t, true, nil
}

// pastState returns aggregate id as it was at p, in the read model's
// shape: at p.version, or at the version of the last event whose
// timestamp is at or before p.at. at computes it from the newest snapshot
// at or below that version and the events after it (aggregate.Handler's
// OrderAt, converted), and returns the current version too. It answers
// 404 for an id nothing of aggType is stored under and for a time before
// the aggregate's first event, and 409 version_not_reached for a version
// beyond the stored one.
func pastState[T any](ctx context.Context, s *Server, aggType string, id uuid.UUID, p pointInTime,
	at func(ctx context.Context, id uuid.UUID, version int64) (T, int64, error),
) (T, error) {
	var zero T
	what := strings.ToLower(aggType)
	version := p.version
	if version == 0 {
		var err error
		if version, err = s.versionAt(ctx, aggType, id, p.at); err != nil {
			return zero, err
		}
	}
	state, current, err := at(ctx, id, version)
	switch {
	case err != nil:
		return zero, fmt.Errorf("%s %s as of %d: %w", what, id, version, err)
	case current == 0:
		return zero, notFound(aggType, id)
	case version > current:
		return zero, &aggregate.Error{Kind: errNotReached, Code: "version_not_reached", Field: "as_of_version",
			Detail: fmt.Sprintf("%s %s is at version %d; version %d does not exist yet", what, id, current, version)}
	}
	return state, nil
}

// timeTravelPage is how many events versionAt reads at a time.
const timeTravelPage = 500

// versionAt returns the version of aggregate id at instant at: the
// sequence of the last event whose timestamp is at or before it, the events
// taken in sequence order. It reads the history a page at a time and stops
// at the first event after at, so that it never holds a long history
// whole. It answers 404 for an id nothing of aggType is stored under and
// for a time before the first event.
func (s *Server) versionAt(ctx context.Context, aggType string, id uuid.UUID, at time.Time) (int64, error) {
	var version int64
	for {
		page, err := s.history.LoadPage(ctx, id, version, timeTravelPage)
		switch {
		case err != nil:
			return 0, err
		case version == 0 && (len(page) == 0 || page[0].AggregateType != aggType):
			return 0, notFound(aggType, id)
		case version == 0 && at.Before(page[0].Timestamp):
			return 0, &aggregate.Error{Kind: errNotFound, Code: notFoundCodes[aggType], Field: "as_of",
				Detail: fmt.Sprintf("%s %s did not exist yet at %s; it was created at %s", strings.ToLower(aggType), id,
					at.UTC().Format(time.RFC3339Nano), page[0].Timestamp.UTC().Format(time.RFC3339Nano))}
		}
		for _, e := range page {
			if e.Timestamp.After(at) {
				return version, nil
			}
			version = e.Sequence
		}
		if len(page) < timeTravelPage {
			return version, nil
		}
	}
}

// orderAt is the order at a version, in the read model's shape.
func (s *Server) orderAt(ctx context.Context, id uuid.UUID, version int64) (readmodel.Order, int64, error) {
	o, current, err := s.commands.OrderAt(ctx, id, version)
	return readmodel.OrderOf(o), current, err
}

// customerAt is the customer at a version, in the read model's shape.
func (s *Server) customerAt(ctx context.Context, id uuid.UUID, version int64) (readmodel.Customer, int64, error) {
	c, current, err := s.commands.CustomerAt(ctx, id, version)
	return readmodel.CustomerOf(c), current, err
}
