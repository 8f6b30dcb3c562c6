package readmodel

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// A Generation is one set of read-model tables: what queries read and what
// the projector writes. Generation 0 is the set the migrations create; a
// rebuild builds the next one beside it and promotes it.
type Generation interface {
	Views
	// Apply projects a batch of events, as a store.Handler.
	Apply(ctx context.Context, events []store.Event) error
	// Broadcast wakes every reader Watch gave a channel to (Changes
	// implements it): at a switch, readers waiting on the old generation
	// look again, at the new one.
	Broadcast()
}

// Catalog is a backend's record of the read models' generations and of the
// rebuilds that make them. It is shared by every instance on one store.
type Catalog interface {
	// Current returns the generation queries read: 0 until a rebuild
	// promotes another.
	Current(ctx context.Context) (int64, error)

	// Open returns generation gen's views when the catalog lists it (see
	// Generations; the current generation is always listed), and an error
	// wrapping ErrNotFound when it does not: it never creates one, so
	// that a generation dropped under a reader is not re-created empty.
	Open(ctx context.Context, gen int64) (Generation, error)

	// Create makes empty tables for generation gen, unless it has them,
	// and returns its views: what a rebuild builds. Under a fence
	// (store.WithFence) it returns an error wrapping store.ErrFenced,
	// creating nothing, when the lease was taken since.
	Create(ctx context.Context, gen int64) (Generation, error)

	// Generations lists the generations that have tables, the current one
	// included, in ascending order.
	Generations(ctx context.Context) ([]int64, error)

	// Promote makes gen the current generation in place of from, in one
	// atomic, durable step: once it returns, Current answers gen on every
	// instance. It returns an error wrapping ErrNotCurrent, changing
	// nothing, when from is not the current generation (another promote
	// came first), so of two promotes from one generation exactly one
	// wins. Under a fence (store.WithFence) it returns an error wrapping
	// store.ErrFenced, changing nothing, once a later epoch of the lease
	// promoted or dropped (or, on a backend without a catalog row to
	// stamp, took the lease).
	Promote(ctx context.Context, from, gen int64) error

	// Drop removes generation gen's tables and closes what Open opened of
	// it. It returns an error, dropping nothing, for the current
	// generation. Dropping a generation that has no tables is a no-op.
	// Under a fence it is refused as Promote is; a fenced Drop also
	// refuses every later Promote of an earlier epoch, so that a lapsed
	// holder cannot promote a generation its successor drops.
	Drop(ctx context.Context, gen int64) error

	// Begin records r as the rebuild to run unless another one has not
	// ended yet: then it returns that one and false, recording nothing.
	// Across instances, at most one Begin wins until the winner ends.
	Begin(ctx context.Context, r Rebuild) (Rebuild, bool, error)

	// Save records r's state and progress. Saving an ended state ends it:
	// the next Begin may win. It leaves CancelRequested as it is.
	Save(ctx context.Context, r Rebuild) error

	// Cancel asks rebuild id to stop (CancelRequested), and returns it as
	// it is now; asking one that has ended changes nothing. It returns an
	// error wrapping ErrNotFound for an unknown id.
	Cancel(ctx context.Context, id uuid.UUID) (Rebuild, error)

	// Rebuild returns rebuild id, or an error wrapping ErrNotFound.
	Rebuild(ctx context.Context, id uuid.UUID) (Rebuild, error)

	// Last returns the newest rebuild (by RequestedAt), or an error
	// wrapping ErrNotFound when none was ever begun.
	Last(ctx context.Context) (Rebuild, error)
}

// RebuildState is where a rebuild is.
type RebuildState string

// A rebuild goes pending → replaying → catching_up → switching → done, or
// ends failed or cancelled from any state before done.
const (
	// RebuildPending: asked for; the active projector picks it up within
	// about a second.
	RebuildPending RebuildState = "pending"
	// RebuildReplaying: the new generation is built from the whole log
	// while queries read the current one.
	RebuildReplaying RebuildState = "replaying"
	// RebuildCatchingUp: the projector writes both generations while the
	// new one catches up with what was committed during the replay.
	RebuildCatchingUp RebuildState = "catching_up"
	// RebuildSwitching: the new generation is promoted; the old one is
	// dropped once every instance has moved.
	RebuildSwitching RebuildState = "switching"
	RebuildDone      RebuildState = "done"
	RebuildFailed    RebuildState = "failed"
	RebuildCancelled RebuildState = "cancelled"
)

// Ended reports whether s is a final state.
func (s RebuildState) Ended() bool {
	return s == RebuildDone || s == RebuildFailed || s == RebuildCancelled
}

// Rebuild is one blue/green rebuild of the read models.
type Rebuild struct {
	ID    uuid.UUID
	State RebuildState
	// Generation is the generation it builds, From the one it replaces
	// (both set when the projector picks it up).
	Generation, From int64
	// EventsDone is how many events it has applied; EventsTotal is the
	// store's Count when it started, and grows if EventsDone passes it.
	EventsDone, EventsTotal int64
	// Error says why it failed or was cancelled; "" otherwise.
	Error string
	// Runner is the projector run carrying it out ("" while pending).
	Runner string
	// CancelRequested is set by Cancel; the runner stops at its next
	// progress step.
	CancelRequested bool
	RequestedAt     time.Time
	StartedAt       time.Time // zero while pending
	UpdatedAt       time.Time
	EndedAt         time.Time // zero until it ends
}

// ErrRebuildRunning is returned, wrapped, when a rebuild is asked for while
// another has not ended.
var ErrRebuildRunning = errors.New("readmodel: a rebuild is running")
