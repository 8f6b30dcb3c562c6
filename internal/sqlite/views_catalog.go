package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/readmodel"
)

// Catalog is the SQLite backend's readmodel.Catalog: readmodels.db in the
// data dir records the current generation and the rebuilds; generation 0
// is views.db and generation n > 0 is views.<n>.db, each a database of its
// own, so that building one never waits for the writer of another, and
// dropping one is deleting its files.
type Catalog struct {
	dir         string
	write, read *sql.DB
	log         *zap.Logger
	opts        []ViewsOption // of every generation's Views
	fences      *leases       // from FencedBy among opts; nil: fences are ignored

	mu    sync.Mutex
	views map[int64]*Views // the generations opened, until Drop or Close
}

// OpenCatalog opens, creating it if needed, the catalog of the read models
// in dir. Each generation's Views is opened with opts.
func OpenCatalog(ctx context.Context, dir string, log *zap.Logger, opts ...ViewsOption) (*Catalog, error) {
	write, read, err := openDB(ctx, filepath.Join(dir, "readmodels.db"), "sqlite/catalog", dbOptions{Synchronous: "FULL"})
	if err != nil {
		return nil, fmt.Errorf("sqlite: views: catalog: %w", err)
	}
	var probe Views // what opts set: FencedBy fences Create, Promote and Drop too
	for _, o := range opts {
		o(&probe)
	}
	return &Catalog{dir: dir, write: write, read: read, log: log, opts: opts, fences: probe.fences, views: map[int64]*Views{}}, nil
}

// Close closes the catalog and every generation it opened.
func (c *Catalog) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for n, v := range c.views {
		errs = append(errs, v.Close())
		delete(c.views, n)
	}
	return errors.Join(append(errs, c.read.Close(), c.write.Close())...)
}

// path is generation n's file.
func (c *Catalog) path(n int64) string {
	if n == 0 {
		return filepath.Join(c.dir, "views.db")
	}
	return filepath.Join(c.dir, fmt.Sprintf("views.%d.db", n))
}

// Current returns the generation queries read.
func (c *Catalog) Current(ctx context.Context) (int64, error) {
	var n int64
	if err := c.read.QueryRowContext(ctx, `SELECT current FROM generation WHERE id = 1`).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite: views: current generation: %w", err)
	}
	return n, nil
}

// Open returns generation n's views, opening its file the first time. It
// returns an error wrapping readmodel.ErrNotFound for a generation that is
// not current and has no file: one that was dropped, or never created.
// (The current generation's file is created at its first Open.)
func (c *Catalog) Open(ctx context.Context, n int64) (readmodel.Generation, error) {
	return c.open(ctx, n, false)
}

// Create returns generation n's views, creating its file when it has none.
// Under a fence whose epoch is not the lease's it creates nothing.
func (c *Catalog) Create(ctx context.Context, n int64) (readmodel.Generation, error) {
	release, err := c.fences.hold(ctx, fmt.Sprintf("create generation %d", n))
	if err != nil {
		return nil, fmt.Errorf("sqlite: views: %w", err)
	}
	defer release()
	return c.open(ctx, n, true)
}

func (c *Catalog) open(ctx context.Context, n int64, create bool) (readmodel.Generation, error) {
	if n < 0 {
		return nil, fmt.Errorf("sqlite: views: generation %d: negative", n)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.views[n]; ok {
		return v, nil
	}
	if !create {
		cur, err := c.Current(ctx)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(c.path(n)); n != cur && errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("sqlite: views: open generation %d: %w: the catalog does not list it", n, readmodel.ErrNotFound)
		}
	}
	v, err := OpenViews(c.path(n), c.log, c.opts...)
	if err != nil {
		return nil, err
	}
	c.views[n] = v
	return v, nil
}

// Generations lists the generations whose files exist, and the current
// one, whose file may not exist before its first Open.
func (c *Catalog) Generations(ctx context.Context) ([]int64, error) {
	cur, err := c.Current(ctx)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return nil, fmt.Errorf("sqlite: views: generations: %w", err)
	}
	gens := []int64{cur}
	for _, e := range entries {
		name := e.Name()
		if name == "views.db" && cur != 0 {
			gens = append(gens, 0)
			continue
		}
		num, ok := strings.CutPrefix(name, "views.")
		if num, ok = strings.CutSuffix(num, ".db"); !ok {
			continue
		}
		if n, err := strconv.ParseInt(num, 10, 64); err == nil && n > 0 && n != cur {
			gens = append(gens, n)
		}
	}
	slices.Sort(gens)
	return gens, nil
}

// Promote makes n current in place of from, in one durable transaction
// that changes nothing unless from is current. Under a fence, the check of
// its epoch and the commit are under the leases' lock.
func (c *Catalog) Promote(ctx context.Context, from, n int64) error {
	// What generation n holds must be durable before it becomes current:
	// the feed's progress, which the projector saved after syncing the
	// generations it wrote, then speaks for it (see DeferSync).
	if err := c.Sync(); err != nil {
		return fmt.Errorf("sqlite: views: promote generation %d: %w", n, err)
	}
	release, err := c.fences.hold(ctx, fmt.Sprintf("promote generation %d", n))
	if err != nil {
		return fmt.Errorf("sqlite: views: %w", err)
	}
	defer release()
	res, err := c.write.ExecContext(ctx, `UPDATE generation SET current = ? WHERE id = 1 AND current = ?`, n, from)
	if err != nil {
		return fmt.Errorf("sqlite: views: promote generation %d: %w", n, err)
	}
	if done, err := res.RowsAffected(); err != nil || done == 0 {
		return fmt.Errorf("sqlite: views: promote generation %d in place of %d: %w", n, from, errors.Join(readmodel.ErrNotCurrent, err))
	}
	return nil
}

// Sync makes every batch applied so far to the generations opened durable
// (see Views.Sync): the feed calls it before it saves the progress of
// Config.ViewsConsumer.
func (c *Catalog) Sync() error {
	c.mu.Lock()
	views := make([]*Views, 0, len(c.views))
	for _, v := range c.views {
		views = append(views, v)
	}
	c.mu.Unlock()
	for _, v := range views {
		if err := v.Sync(); err != nil {
			return err
		}
	}
	return nil
}

// Drop closes generation n, if open, and deletes its files (with its WAL
// and shared memory); it refuses the current generation.
func (c *Catalog) Drop(ctx context.Context, n int64) error {
	release, err := c.fences.hold(ctx, fmt.Sprintf("drop generation %d", n))
	if err != nil {
		return fmt.Errorf("sqlite: views: %w", err)
	}
	defer release()
	cur, err := c.Current(ctx)
	if err != nil {
		return err
	}
	if n == cur {
		return fmt.Errorf("sqlite: views: generation %d is current: not dropped", n)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.views[n]; ok {
		delete(c.views, n)
		if err := v.Close(); err != nil {
			c.log.Warn("closing a dropped generation", zap.Int64("generation", n), zap.Error(err))
		}
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(c.path(n) + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("sqlite: views: drop generation %d: %w", n, err)
		}
	}
	return nil
}

const rebuildColumns = `id, state, generation, from_generation, events_done, events_total, error, runner,
	cancel_requested, requested_at, started_at, updated_at, ended_at`

// ended lists the final states, for the queries.
const ended = `('done', 'failed', 'cancelled')`

// Begin inserts r unless a rebuild that has not ended exists: one
// statement, so two catalogs on one file cannot both win.
func (c *Catalog) Begin(ctx context.Context, r readmodel.Rebuild) (readmodel.Rebuild, bool, error) {
	res, err := c.write.ExecContext(ctx, `INSERT INTO rebuilds (`+rebuildColumns+`)
		SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
		WHERE NOT EXISTS (SELECT 1 FROM rebuilds WHERE state NOT IN `+ended+`)`, rebuildArgs(r)...)
	if err != nil {
		return readmodel.Rebuild{}, false, fmt.Errorf("sqlite: views: begin rebuild: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return r, err == nil, err
	}
	running, err := scanRebuild(c.read.QueryRowContext(ctx, `SELECT `+rebuildColumns+` FROM rebuilds
		WHERE state NOT IN `+ended+` LIMIT 1`))
	if err != nil {
		return readmodel.Rebuild{}, false, fmt.Errorf("sqlite: views: the running rebuild: %w", err)
	}
	return running, false, nil
}

// Save writes every field of r but cancel_requested.
func (c *Catalog) Save(ctx context.Context, r readmodel.Rebuild) error {
	_, err := c.write.ExecContext(ctx, `UPDATE rebuilds SET state = ?, generation = ?, from_generation = ?,
		events_done = ?, events_total = ?, error = ?, runner = ?, requested_at = ?, started_at = ?,
		updated_at = ?, ended_at = ? WHERE id = ?`,
		string(r.State), r.Generation, r.From, r.EventsDone, r.EventsTotal, r.Error, r.Runner,
		formatOptional(r.RequestedAt), formatOptional(r.StartedAt), formatOptional(r.UpdatedAt), formatOptional(r.EndedAt),
		r.ID.String())
	if err != nil {
		return fmt.Errorf("sqlite: views: save rebuild %s: %w", r.ID, err)
	}
	return nil
}

// Cancel sets cancel_requested on a rebuild that has not ended.
func (c *Catalog) Cancel(ctx context.Context, id uuid.UUID) (readmodel.Rebuild, error) {
	if _, err := c.write.ExecContext(ctx, `UPDATE rebuilds SET cancel_requested = 1
		WHERE id = ? AND state NOT IN `+ended, id.String()); err != nil {
		return readmodel.Rebuild{}, fmt.Errorf("sqlite: views: cancel rebuild %s: %w", id, err)
	}
	return c.Rebuild(ctx, id)
}

// Rebuild returns rebuild id.
func (c *Catalog) Rebuild(ctx context.Context, id uuid.UUID) (readmodel.Rebuild, error) {
	r, err := scanRebuild(c.read.QueryRowContext(ctx, `SELECT `+rebuildColumns+` FROM rebuilds WHERE id = ?`, id.String()))
	if err != nil {
		return readmodel.Rebuild{}, fmt.Errorf("sqlite: views: rebuild %s: %w", id, err)
	}
	return r, nil
}

// Last returns the rebuild requested last.
func (c *Catalog) Last(ctx context.Context) (readmodel.Rebuild, error) {
	r, err := scanRebuild(c.read.QueryRowContext(ctx, `SELECT `+rebuildColumns+` FROM rebuilds
		ORDER BY requested_at DESC, id DESC LIMIT 1`))
	if err != nil {
		return readmodel.Rebuild{}, fmt.Errorf("sqlite: views: last rebuild: %w", err)
	}
	return r, nil
}

// rebuildArgs are r's columns in rebuildColumns order.
func rebuildArgs(r readmodel.Rebuild) []any {
	return []any{r.ID.String(), string(r.State), r.Generation, r.From, r.EventsDone, r.EventsTotal, r.Error, r.Runner,
		r.CancelRequested, formatOptional(r.RequestedAt), formatOptional(r.StartedAt), formatOptional(r.UpdatedAt), formatOptional(r.EndedAt)}
}

// formatOptional stores the zero time as ”.
func formatOptional(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return formatTime(t)
}

func parseOptional(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return parseTime(s)
}

// scanRebuild reads one row selected with rebuildColumns; no row is an
// error wrapping readmodel.ErrNotFound.
func scanRebuild(row *sql.Row) (readmodel.Rebuild, error) {
	var (
		r                                   readmodel.Rebuild
		id, state                           string
		requested, started, updated, endedT string
	)
	err := row.Scan(&id, &state, &r.Generation, &r.From, &r.EventsDone, &r.EventsTotal, &r.Error, &r.Runner,
		&r.CancelRequested, &requested, &started, &updated, &endedT)
	if errors.Is(err, sql.ErrNoRows) {
		return readmodel.Rebuild{}, readmodel.ErrNotFound
	}
	if err != nil {
		return readmodel.Rebuild{}, err
	}
	r.State = readmodel.RebuildState(state)
	if r.ID, err = uuid.Parse(id); err != nil {
		return readmodel.Rebuild{}, fmt.Errorf("rebuild id %q: %w", id, err)
	}
	for _, t := range []struct {
		dst *time.Time
		s   string
	}{{&r.RequestedAt, requested}, {&r.StartedAt, started}, {&r.UpdatedAt, updated}, {&r.EndedAt, endedT}} {
		if *t.dst, err = parseOptional(t.s); err != nil {
			return readmodel.Rebuild{}, fmt.Errorf("rebuild %s: %w", id, err)
		}
	}
	return r, nil
}

var _ readmodel.Catalog = (*Catalog)(nil)
