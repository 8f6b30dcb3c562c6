package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
)

// Rebuilds is what the admin API needs of the read models' rebuilds
// (readmodel.Rebuilder).
type Rebuilds interface {
	// Request asks for a rebuild and returns it, pending; while another
	// has not ended it returns that one and an error wrapping
	// readmodel.ErrRebuildRunning.
	Request(ctx context.Context) (readmodel.Rebuild, error)
	// Rebuild returns rebuild id, or an error wrapping readmodel.ErrNotFound.
	Rebuild(ctx context.Context, id uuid.UUID) (readmodel.Rebuild, error)
	// Last returns the newest rebuild, or an error wrapping
	// readmodel.ErrNotFound.
	Last(ctx context.Context) (readmodel.Rebuild, error)
	// Cancel asks rebuild id to stop and returns it, or an error wrapping
	// readmodel.ErrNotFound.
	Cancel(ctx context.Context, id uuid.UUID) (readmodel.Rebuild, error)
}

// WithRebuilds serves the rebuild routes under /v1/admin/rebuilds, behind
// the admin token of WithAdmin.
func (s *Server) WithRebuilds(rb Rebuilds) *Server {
	s.rebuilds = rb
	return s
}

// rebuildID is the pattern of a rebuild's {id}: a UUID, so that "latest"
// is never taken for one.
const rebuildID = "/rebuilds/{id:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}}"

// mountRebuilds adds the rebuild routes to r, the admin router.
func (s *Server) mountRebuilds(r chi.Router) {
	r.Post("/rebuilds", s.handle(s.startRebuild))
	r.Get("/rebuilds/latest", s.handle(s.latestRebuild))
	r.Get(rebuildID, s.handle(s.getRebuild))
	// A cancel is an action on the rebuild, not its deletion: the rebuild
	// stays, ended cancelled, for GET to show.
	r.Post(rebuildID+"/cancel", s.handle(s.cancelRebuild))
}

// rebuildJSON is a rebuild as the admin API shows it.
type rebuildJSON struct {
	ID              uuid.UUID  `json:"id"`
	State           string     `json:"state"`
	Generation      *int64     `json:"generation"` // null while pending
	Replaces        *int64     `json:"replaces"`
	EventsDone      int64      `json:"events_done"`
	EventsTotal     int64      `json:"events_total"`
	EventsPerSecond float64    `json:"events_per_second"`
	ETASeconds      *float64   `json:"eta_seconds"` // null when ended or unknown
	Error           *string    `json:"error"`
	CancelRequested bool       `json:"cancel_requested"`
	RequestedAt     time.Time  `json:"requested_at"`
	StartedAt       *time.Time `json:"started_at"`
	UpdatedAt       time.Time  `json:"updated_at"`
	EndedAt         *time.Time `json:"ended_at"`
}

func rebuildOut(r readmodel.Rebuild) rebuildJSON {
	out := rebuildJSON{
		ID: r.ID, State: string(r.State), EventsDone: r.EventsDone, EventsTotal: r.EventsTotal,
		Error: nullable(r.Error), CancelRequested: r.CancelRequested,
		RequestedAt: r.RequestedAt.UTC(), StartedAt: nullableTime(r.StartedAt), UpdatedAt: r.UpdatedAt.UTC(),
		EndedAt: nullableTime(r.EndedAt),
	}
	if r.State == readmodel.RebuildPending {
		return out
	}
	out.Generation, out.Replaces = &r.Generation, &r.From
	end := r.UpdatedAt
	if !r.EndedAt.IsZero() {
		end = r.EndedAt
	}
	if took := end.Sub(r.StartedAt).Seconds(); took > 0 {
		out.EventsPerSecond = float64(r.EventsDone) / took
	}
	if !r.State.Ended() && out.EventsPerSecond > 0 {
		eta := float64(max(0, r.EventsTotal-r.EventsDone)) / out.EventsPerSecond
		out.ETASeconds = &eta
	}
	return out
}

// startRebuild answers 202 with the pending rebuild and its Location, or
// 409 rebuild_running naming the one that has not ended.
func (s *Server) startRebuild(w http.ResponseWriter, r *http.Request) error {
	rb, err := s.rebuilds.Request(r.Context())
	if errors.Is(err, readmodel.ErrRebuildRunning) {
		w.Header().Set("Location", "/v1/admin/rebuilds/"+rb.ID.String())
		return &aggregate.Error{Kind: err, Detail: fmt.Sprintf("rebuild %s is %s: one rebuild runs at a time; follow it, or cancel it with POST /v1/admin/rebuilds/%s/cancel", rb.ID, rb.State, rb.ID)}
	}
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/admin/rebuilds/"+rb.ID.String())
	return writeJSON(w, http.StatusAccepted, rebuildOut(rb))
}

func (s *Server) latestRebuild(w http.ResponseWriter, r *http.Request) error {
	rb, err := s.rebuilds.Last(r.Context())
	if errors.Is(err, readmodel.ErrNotFound) {
		return &aggregate.Error{Kind: errNotFound, Code: "rebuild_not_found", Detail: "no rebuild was ever requested"}
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rebuildOut(rb))
}

func (s *Server) getRebuild(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	rb, err := s.rebuilds.Rebuild(r.Context(), id)
	if err != nil {
		return rebuildError(id, err)
	}
	return writeJSON(w, http.StatusOK, rebuildOut(rb))
}

// cancelRebuild answers 202 with the rebuild asked to stop (it stops
// within about a second, before its switch), or 409 rebuild_ended when it
// has ended already.
func (s *Server) cancelRebuild(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	rb, err := s.rebuilds.Cancel(r.Context(), id)
	if err != nil {
		return rebuildError(id, err)
	}
	if rb.State.Ended() {
		return &aggregate.Error{Kind: errRebuildEnded, Detail: fmt.Sprintf("rebuild %s has ended (%s)", id, rb.State)}
	}
	return writeJSON(w, http.StatusAccepted, rebuildOut(rb))
}

// rebuildError words the catalog's not found.
func rebuildError(id uuid.UUID, err error) error {
	if errors.Is(err, readmodel.ErrNotFound) {
		return &aggregate.Error{Kind: errNotFound, Code: "rebuild_not_found", Detail: fmt.Sprintf("no rebuild has id %s", id)}
	}
	return err
}
