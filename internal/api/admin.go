package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/store"
)

// DeadLetters is what the admin API needs of the relay's dead-letter queue.
// A dead letter's id is its event's feed position.
type DeadLetters interface {
	// List returns up to limit dead letters with a position greater than
	// after, in position order.
	List(ctx context.Context, after int64, limit int) ([]relay.DeadLetter, error)

	// Inspect returns the dead letter at position and the envelope of the
	// event it holds back, or an error wrapping relay.ErrNotFound.
	Inspect(ctx context.Context, position int64) (relay.DeadLetter, store.Event, error)

	// Replay publishes the dead letter at position and the events parked
	// behind it, in order, and returns how many it published. It returns
	// relay.ErrNotFound for an unknown position, relay.ErrReplayFailed
	// (wrapped) when a letter failed permanently again (it stays, with its
	// new error) and relay.ErrBrokerUnavailable when Kafka could not be
	// reached; published counts what went out before the error.
	Replay(ctx context.Context, position int64) (published int, err error)

	// Discard drops the dead letter at position, never to be published,
	// then publishes the events parked behind it as Replay does, with the
	// same errors.
	Discard(ctx context.Context, position int64) (published int, err error)
}

// Paging of GET /v1/admin/dlq.
const (
	defaultDLQLimit = 100
	maxDLQLimit     = 500
)

// WithAdmin serves the admin routes under /v1/admin (the dead letters of
// dl, and the rebuilds of WithRebuilds), for requests that carry
// "Authorization: Bearer <token>". With an empty token, and no
// WithTokens, the routes are not mounted at all and answer 404 like any
// unknown path: an admin API without a credential is never open by
// accident. With WithTokens they also take a token of scope admin. A nil dl mounts no
// dead-letter routes.
func (s *Server) WithAdmin(dl DeadLetters, token string) *Server {
	s.admin, s.adminToken = dl, token
	return s
}

// mountAdmin adds the admin routes to r when WithAdmin configured them.
func (s *Server) mountAdmin(r chi.Router) {
	if (s.adminToken == "" && s.tokens == nil) || (s.admin == nil && s.rebuilds == nil && s.backups == nil) {
		return
	}
	r.Route("/v1/admin", func(r chi.Router) {
		if s.tokens == nil {
			r.Use(s.authorize) // with tokens, authenticate takes the admin token too
		}
		if s.admin != nil {
			r.Get("/dlq", s.handle(s.listDeadLetters))
			r.Get("/dlq/{id}", s.handle(s.getDeadLetter))
			r.Post("/dlq/{id}/replay", s.handle(s.replayDeadLetter))
			r.Delete("/dlq/{id}", s.handle(s.discardDeadLetter))
		}
		if s.rebuilds != nil {
			s.mountRebuilds(r)
		}
		if s.backups != nil {
			r.Post("/backups", s.handle(s.startBackup))
		}
	})
}

// authorize admits requests bearing the admin token (RFC 6750) and answers
// the others 401 with a WWW-Authenticate challenge.
func (s *Server) authorize(next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(s.adminToken))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		token = strings.TrimSpace(token)
		switch {
		case !strings.EqualFold(scheme, "Bearer") || token == "":
			w.Header().Set("WWW-Authenticate", `Bearer realm="orderd-admin"`)
			writeError(w, r, &aggregate.Error{Kind: errUnauthorized, Code: "unauthorized", Detail: "the admin API needs an Authorization: Bearer <token> header"})
		case !tokenMatches(token, want):
			w.Header().Set("WWW-Authenticate", `Bearer realm="orderd-admin", error="invalid_token"`)
			writeError(w, r, &aggregate.Error{Kind: errUnauthorized, Code: "unauthorized", Detail: "the bearer token is not the admin token"})
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// tokenMatches compares in constant time. subtle.ConstantTimeCompare
// returns at once when the lengths differ, which would tell a guesser the
// token's length; the SHA-256 digests it compares here always have 32 bytes.
func tokenMatches(got string, want [sha256.Size]byte) bool {
	sum := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(sum[:], want[:]) == 1
}

// deadLetterJSON is a dead letter as the admin API shows it.
type deadLetterJSON struct {
	ID            int64      `json:"id"` // the event's feed position
	EventID       uuid.UUID  `json:"event_id"`
	AggregateID   uuid.UUID  `json:"aggregate_id"`
	AggregateType string     `json:"aggregate_type"`
	Sequence      int64      `json:"sequence"`
	EventType     string     `json:"event_type"`
	Topic         string     `json:"topic"`
	State         string     `json:"state"`
	Error         *string    `json:"error"`
	Attempts      int        `json:"attempts"`
	FirstFailedAt *time.Time `json:"first_failed_at"`
	LastFailedAt  *time.Time `json:"last_failed_at"`
}

func deadLetterOut(l relay.DeadLetter) deadLetterJSON {
	return deadLetterJSON{
		ID: l.Position, EventID: l.EventID, AggregateID: l.AggregateID, AggregateType: l.AggregateType,
		Sequence: l.Sequence, EventType: l.EventType, Topic: l.Topic, State: l.State,
		Error: nullable(l.Error), Attempts: l.Attempts,
		FirstFailedAt: nullableTime(l.FirstFailedAt), LastFailedAt: nullableTime(l.LastFailedAt),
	}
}

// nullableTime answers a time never set (a parked event never attempted)
// as null rather than as the year 1.
func nullableTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// envelopeOut is an event as GET /v1/orders/{id}/events shows it.
func envelopeOut(e store.Event) eventJSON {
	md := e.Metadata
	if md == nil {
		md = map[string]string{}
	}
	return eventJSON{
		EventID: e.ID, AggregateID: e.AggregateID, AggregateType: e.AggregateType, Sequence: e.Sequence,
		EventType: e.Type, EventVersion: e.SchemaVersion, Data: e.Data, CausationID: e.CausationID,
		CorrelationID: e.CorrelationID, Timestamp: e.Timestamp, Metadata: md,
	}
}

func (s *Server) listDeadLetters(w http.ResponseWriter, r *http.Request) error {
	n, err := queryInt(r, "limit", 1, maxDLQLimit, defaultDLQLimit, fmt.Sprintf("a whole number from 1 to %d", maxDLQLimit))
	if err != nil {
		return err
	}
	limit := int(n)
	after, err := queryInt(r, "after", 0, math.MaxInt64, 0, "a dead letter id (a whole number of 0 or more)")
	if err != nil {
		return err
	}
	// One more than asked tells whether there is a next page without a
	// second query, so next_after is null exactly on the last page.
	letters, err := s.admin.List(r.Context(), after, limit+1)
	if err != nil {
		return err
	}
	out := struct {
		DeadLetters []deadLetterJSON `json:"dead_letters"`
		NextAfter   *int64           `json:"next_after"`
	}{DeadLetters: []deadLetterJSON{}}
	if len(letters) > limit {
		letters = letters[:limit]
		next := letters[limit-1].Position
		out.NextAfter = &next
	}
	for _, l := range letters {
		out.DeadLetters = append(out.DeadLetters, deadLetterOut(l))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) getDeadLetter(w http.ResponseWriter, r *http.Request) error {
	id, err := letterID(r)
	if err != nil {
		return err
	}
	l, e, err := s.admin.Inspect(r.Context(), id)
	if err != nil {
		return deadLetterError(id, 0, err)
	}
	return writeJSON(w, http.StatusOK, map[string]any{"dead_letter": deadLetterOut(l), "event": envelopeOut(e)})
}

func (s *Server) replayDeadLetter(w http.ResponseWriter, r *http.Request) error {
	return s.release(w, r, s.admin.Replay)
}

func (s *Server) discardDeadLetter(w http.ResponseWriter, r *http.Request) error {
	return s.release(w, r, s.admin.Discard)
}

// release runs a replay or a discard and answers how many events it
// published. An unknown id is 404 whether or not the relay runs here (a
// replay or discard on an instance without one is 503): existence is
// answered before the state of the relay.
func (s *Server) release(w http.ResponseWriter, r *http.Request, op func(context.Context, int64) (int, error)) error {
	id, err := letterID(r)
	if err != nil {
		return err
	}
	if _, _, err := s.admin.Inspect(r.Context(), id); err != nil {
		return deadLetterError(id, 0, err)
	}
	n, err := op(r.Context(), id)
	if err != nil {
		return deadLetterError(id, n, err)
	}
	return writeJSON(w, http.StatusOK, map[string]int{"published": n})
}

// letterID returns the {id} of an admin route: a feed position.
func letterID(r *http.Request) (int64, error) {
	s := chi.URLParam(r, "id")
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id < 1 {
		return 0, invalid("invalid_id", "id", "id must be a dead letter id, a whole number of 1 or more, not %s", echo(s))
	}
	return id, nil
}

// deadLetterError words the relay's errors; problems gives them their
// statuses and codes. published is how many events went out before err: a
// replay that stops halfway has still changed something.
func deadLetterError(id int64, published int, err error) error {
	var detail string
	switch {
	case errors.Is(err, relay.ErrNotFound):
		detail = fmt.Sprintf("no dead letter has id %d", id)
	case errors.Is(err, relay.ErrReplayFailed):
		detail = fmt.Sprintf("%d event(s) published, then publishing failed again (the dead letter stays): %v", published, err)
	case errors.Is(err, relay.ErrBrokerUnavailable):
		detail = fmt.Sprintf("%d event(s) published, then Kafka could not be reached; retry later: %v", published, err)
	default:
		return err
	}
	return &aggregate.Error{Kind: err, Detail: detail} // the code is problems' code of err
}
