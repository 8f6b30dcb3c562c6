package readmodel

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/telemetry"
)

// Rebuilder carries out blue/green rebuilds of the read models. Anyone may
// ask for one (Request, on any instance); the one active projector runs it
// (Serve, beside its feed subscription), because during the catch-up the
// projector's batches must reach the new generation too (Live.Follow).
//
// A rebuild builds generation n+1 from the whole log (store.Log.Replay)
// while queries keep reading generation n; then the projector writes both
// while a second replay brings n+1 up to what was committed during the
// first; then, between two projector batches, n+1 is promoted and reads
// move to it; after a grace in which n is still written (for instances
// that have not yet seen the switch), n is dropped. A rebuild that fails,
// is cancelled or is interrupted (the process dies, the projector moves
// to another instance) drops its new generation and leaves n as it was;
// the next projector to start marks an interrupted one failed.
type Rebuilder struct {
	catalog Catalog
	log     store.Log
	live    *Live
	opt     RebuildOptions
	logger  *zap.Logger
}

// RebuildOptions tune a Rebuilder. Zero values take the defaults.
type RebuildOptions struct {
	// Poll is how often Serve looks for a pending rebuild: 1 s.
	Poll time.Duration
	// Progress is how often a running rebuild saves its progress and
	// looks for a cancel: 1 s.
	Progress time.Duration
	// Grace is how long the previous generation is still written after a
	// switch, before it is dropped: long enough for the reads in flight on
	// it to finish and for every other instance's Live.Track to adopt the
	// new one: 2 s.
	Grace time.Duration
	// FollowWait is how long the catch-up waits, once the rebuild says it
	// is catching up, for every other instance's Live.Track to write the
	// new generation too: longer than Track's interval where the projector
	// runs on several instances (split into shards); 0 where it runs on
	// this one.
	FollowWait time.Duration
}

// NewRebuilder returns a Rebuilder over the catalog, replaying log into
// live's generations.
func NewRebuilder(c Catalog, log store.Log, live *Live, opt RebuildOptions, logger *zap.Logger) *Rebuilder {
	if opt.Poll <= 0 {
		opt.Poll = time.Second
	}
	if opt.Progress <= 0 {
		opt.Progress = time.Second
	}
	if opt.Grace <= 0 {
		opt.Grace = 2 * time.Second
	}
	return &Rebuilder{catalog: c, log: log, live: live, opt: opt, logger: logger}
}

// Request asks for a rebuild. It returns the pending rebuild, or the one
// that has not ended yet with an error wrapping ErrRebuildRunning.
func (b *Rebuilder) Request(ctx context.Context) (Rebuild, error) {
	now := time.Now().UTC()
	r := Rebuild{ID: uuid.Must(uuid.NewV7()), State: RebuildPending, RequestedAt: now, UpdatedAt: now}
	got, ok, err := b.catalog.Begin(ctx, r)
	switch {
	case err != nil:
		return Rebuild{}, fmt.Errorf("readmodel: request a rebuild: %w", err)
	case !ok:
		return got, fmt.Errorf("%w: rebuild %s is %s", ErrRebuildRunning, got.ID, got.State)
	}
	b.logger.Info("rebuild requested", zap.Stringer("rebuild", r.ID))
	return got, nil
}

// Rebuild returns rebuild id, or an error wrapping ErrNotFound.
func (b *Rebuilder) Rebuild(ctx context.Context, id uuid.UUID) (Rebuild, error) {
	return b.catalog.Rebuild(ctx, id)
}

// Last returns the newest rebuild, or an error wrapping ErrNotFound.
func (b *Rebuilder) Last(ctx context.Context) (Rebuild, error) { return b.catalog.Last(ctx) }

// Cancel asks rebuild id to stop; see Catalog.Cancel.
func (b *Rebuilder) Cancel(ctx context.Context, id uuid.UUID) (Rebuild, error) {
	return b.catalog.Cancel(ctx, id)
}

// errCancelled ends a rebuild an operator cancelled.
var errCancelled = errors.New("cancelled by an operator")

// Serve runs the pending rebuilds, one at a time, until ctx ends; runner
// names this projector run in them. It first ends what a previous
// projector left: a rebuild it was running is marked failed, and
// generations other than the current one are dropped. It returns nil when
// ctx ends and an error when the catalog fails at the start.
func (b *Rebuilder) Serve(ctx context.Context, runner string) error {
	if err := b.recover(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("readmodel: rebuild recovery: %w", err)
	}
	t := time.NewTicker(b.opt.Poll)
	defer t.Stop()
	for {
		r, err := b.catalog.Last(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrNotFound):
		case err != nil:
			b.logger.Warn("rebuild: reading the catalog failed", zap.Error(err))
		case r.State == RebuildPending:
			b.run(ctx, r, runner)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// recover ends the rebuild a previous projector run left running, and
// drops every generation but the current one: what an interrupted rebuild
// built, or the old generation a switch had not dropped yet.
func (b *Rebuilder) recover(ctx context.Context) error {
	r, err := b.catalog.Last(ctx)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return err
	case !r.State.Ended() && r.State != RebuildPending:
		b.logger.Warn("rebuild: a rebuild was interrupted; marking it failed", zap.Stringer("rebuild", r.ID),
			zap.String("state", string(r.State)), zap.String("runner", r.Runner))
		r.State, r.Error = RebuildFailed, fmt.Sprintf("interrupted while %s: the projector running it (%s) stopped", r.State, r.Runner)
		r.UpdatedAt = time.Now().UTC()
		r.EndedAt = r.UpdatedAt
		if err := b.catalog.Save(ctx, r); err != nil {
			return err
		}
	}
	cur := b.live.Current()
	gens, err := b.catalog.Generations(ctx)
	if err != nil {
		return err
	}
	for _, g := range gens {
		if g != cur {
			b.logger.Info("rebuild: dropping a generation left behind", zap.Int64("generation", g))
			if err := b.catalog.Drop(ctx, g); err != nil {
				return err
			}
		}
	}
	return nil
}

// run carries out rebuild r and records how it ended.
func (b *Rebuilder) run(ctx context.Context, r Rebuild, runner string) {
	log := b.logger.With(zap.Stringer("rebuild", r.ID))
	r.Runner = runner
	err := b.build(ctx, &r, log)
	now := time.Now().UTC()
	r.UpdatedAt, r.EndedAt = now, now
	switch {
	case err == nil:
		r.State = RebuildDone
		log.Info("rebuild done", zap.Int64("generation", r.Generation), zap.Int64("events", r.EventsDone),
			zap.Duration("took", now.Sub(r.StartedAt)))
	case errors.Is(err, errCancelled):
		r.State, r.Error = RebuildCancelled, err.Error()
		log.Info("rebuild cancelled", zap.Int64("generation", r.Generation))
	case ctx.Err() != nil:
		// The projector is stopping: the next one marks it interrupted,
		// as after a crash, and drops what it built.
		return
	default:
		r.State, r.Error = RebuildFailed, err.Error()
		log.Error("rebuild failed", zap.Int64("generation", r.Generation), zap.Error(err))
	}
	if err := b.catalog.Save(context.WithoutCancel(ctx), r); err != nil {
		log.Error("rebuild: saving how it ended failed", zap.Error(err))
	}
	if r.State == RebuildDone {
		b.retire(ctx, r.From, log)
	}
}

// build runs the phases of r up to the switch. On an error it drops the
// new generation; the current one was never touched.
func (b *Rebuilder) build(ctx context.Context, r *Rebuild, log *zap.Logger) (err error) {
	if r.CancelRequested {
		return errCancelled
	}
	gens, err := b.catalog.Generations(ctx)
	if err != nil {
		return fmt.Errorf("list generations: %w", err)
	}
	r.From = b.live.Current()
	r.Generation = r.From + 1
	if len(gens) > 0 {
		r.Generation = max(r.Generation, slices.Max(gens)+1)
	}
	r.State = RebuildReplaying
	r.StartedAt = time.Now().UTC()
	if r.EventsTotal, err = b.log.Count(ctx); err != nil {
		return fmt.Errorf("count the events: %w", err)
	}
	if err := b.save(ctx, r); err != nil {
		return err
	}
	g, err := b.catalog.Create(ctx, r.Generation)
	if err != nil {
		return fmt.Errorf("create generation %d: %w", r.Generation, err)
	}
	switched := false
	defer func() {
		if err != nil && !switched {
			b.live.Unfollow()
			if derr := b.catalog.Drop(context.WithoutCancel(ctx), r.Generation); derr != nil {
				log.Error("rebuild: dropping the unfinished generation failed; the next projector drops it", zap.Error(derr))
			}
		}
	}()
	log.Info("rebuild: replaying the log", zap.Int64("generation", r.Generation), zap.Int64("from", r.From),
		zap.Int64("events", r.EventsTotal))

	p := progress{b: b, r: r, last: time.Now()}
	// The replay is a trace of its own; each batch's span links to the
	// traces of the commands whose events it replays.
	ctx, span := telemetry.Tracer().Start(ctx, "rebuild", trace.WithNewRoot(),
		trace.WithAttributes(attribute.Int64("orderd.generation", r.Generation)))
	mark, err := b.log.Replay(ctx, 0, telemetry.Linked("rebuild replay", func(ctx context.Context, events []store.Event) error {
		if err := g.Apply(ctx, events); err != nil {
			return err
		}
		return p.add(ctx, len(events))
	}))
	telemetry.End(span, err)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}

	// From the projector's next batch on, the new generation is written
	// too; a second replay brings it what was committed during the first.
	b.live.Follow(r.Generation, g)
	more, err := b.log.Count(ctx)
	if err != nil {
		return fmt.Errorf("count the events: %w", err)
	}
	r.State = RebuildCatchingUp
	r.EventsTotal = r.EventsDone + max(0, more-mark)
	if err := b.save(ctx, r); err != nil {
		return err
	}
	if w := b.opt.FollowWait; w > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(w):
		}
	}
	log.Info("rebuild: catching up", zap.Int64("after", mark))
	if _, err := b.log.Replay(ctx, mark, func(ctx context.Context, events []store.Event) error {
		if err := b.live.catchUp(ctx, g, events); err != nil {
			return err
		}
		return p.add(ctx, len(events))
	}); err != nil {
		return fmt.Errorf("catch up: %w", err)
	}
	if err := p.cancelled(ctx); err != nil {
		return err
	}

	r.State = RebuildSwitching
	if err := b.save(ctx, r); err != nil {
		return err
	}
	if err := b.live.Switch(func() error { return b.catalog.Promote(ctx, r.From, r.Generation) }); err != nil {
		return fmt.Errorf("switch to generation %d: %w", r.Generation, err)
	}
	switched = true
	log.Info("rebuild: switched; reads go to the new generation", zap.Int64("generation", r.Generation))
	return nil
}

// retire writes generation n, which a switch left, for the grace, then
// drops it.
func (b *Rebuilder) retire(ctx context.Context, n int64, log *zap.Logger) {
	select {
	case <-time.After(b.opt.Grace):
	case <-ctx.Done():
	}
	b.live.Unfollow()
	if err := b.catalog.Drop(context.WithoutCancel(ctx), n); err != nil {
		// Reads moved already; the next projector drops it.
		log.Error("rebuild: dropping the previous generation failed", zap.Int64("generation", n), zap.Error(err))
	}
}

// save records r's progress now.
func (b *Rebuilder) save(ctx context.Context, r *Rebuild) error {
	r.UpdatedAt = time.Now().UTC()
	if err := b.catalog.Save(ctx, *r); err != nil {
		return fmt.Errorf("save progress: %w", err)
	}
	return nil
}

// progress counts a rebuild's events and, every Progress, saves them and
// looks for a cancel.
type progress struct {
	b    *Rebuilder
	r    *Rebuild
	last time.Time
}

func (p *progress) add(ctx context.Context, n int) error {
	p.r.EventsDone += int64(n)
	p.r.EventsTotal = max(p.r.EventsTotal, p.r.EventsDone)
	if time.Since(p.last) < p.b.opt.Progress {
		return nil
	}
	p.last = time.Now()
	if err := p.cancelled(ctx); err != nil {
		return err
	}
	return p.b.save(ctx, p.r)
}

// cancelled returns errCancelled when an operator asked the rebuild to
// stop.
func (p *progress) cancelled(ctx context.Context) error {
	now, err := p.b.catalog.Rebuild(ctx, p.r.ID)
	if err != nil {
		return fmt.Errorf("read the rebuild: %w", err)
	}
	if now.CancelRequested {
		p.r.CancelRequested = true
		return errCancelled
	}
	return nil
}
