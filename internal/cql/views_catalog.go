package cql

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"sync"

	"github.com/gocql/gocql"
	"github.com/scylladb/gocqlx/v3"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

const (
	currentCQL = `SELECT generation FROM read_model_generation WHERE name = 'current'`
	// The current generation and the epoch of the projector that last
	// promoted or dropped (store.Fence), read at SERIAL (leaseSerial: the
	// projector's lease is global), and changed by lightweight
	// transactions conditional on both.
	generationReadCQL = `SELECT generation, epoch FROM read_model_generation WHERE name = 'current'`
	promoteCQL        = `UPDATE read_model_generation SET generation = ?, epoch = ? WHERE name = 'current'
		IF generation = ? AND epoch = ?`
	stampGenerationCQL = `UPDATE read_model_generation SET epoch = ? WHERE name = 'current' IF epoch = ?`
	tablesCQL          = `SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?`
)

// generationTable matches the order table of a generation: order_read_model
// for 0, order_read_model_g<n> for n > 0.
var generationTable = regexp.MustCompile(`^` + orderTableName + `(?:_g([1-9][0-9]*))?$`)

// Catalog is the readmodel.Catalog of the Scylla backend, in the event
// store's keyspace (see migrations/scylla/0204_read_model_catalog.cql). It
// is safe for concurrent use, also by several Catalogs (in several
// processes) on one keyspace.
//
// Which tables exist is read from system_schema.tables, the truth that a
// table dropped or created by hand cannot contradict. The current
// generation is one row, changed only by lightweight transactions
// conditional on the generation it replaces and on the fencing epoch of
// the projector that wrote it last (see Promote and Drop), and read at the
// Views' consistency (LocalQuorum by default). The rebuild records are one partition whose
// every write is a lightweight transaction; see rebuilds.go.
type Catalog struct {
	session     gocqlx.Session
	keyspace    string
	log         *zap.Logger
	opts        []ViewsOption
	consistency gocql.Consistency
	serial      gocql.Consistency

	mu    sync.Mutex
	views map[int64]*Views // what Open returned, by generation, until Drop
}

// NewCatalog returns the catalog of the read models in keyspace, the
// keyspace session is bound to (the event store's: its migration creates
// the catalog's tables). opts configure the Views that Open returns, and
// the catalog's own reads and writes take their consistencies.
func NewCatalog(session gocqlx.Session, keyspace string, log *zap.Logger, opts ...ViewsOption) *Catalog {
	v := NewViews(session, log, opts...) // only to read the options' consistencies
	return &Catalog{session: session, keyspace: keyspace, log: log, opts: opts,
		consistency: v.consistency, serial: v.serial, views: map[int64]*Views{}}
}

// Current returns the generation queries read: 0 until Promote wrote
// another. It returns an error when Cassandra fails.
func (c *Catalog) Current(ctx context.Context) (int64, error) {
	var gen int64
	err := c.session.Session.Query(currentCQL).WithContext(ctx).Consistency(c.consistency).Idempotent(true).Scan(&gen)
	switch {
	case errors.Is(err, gocql.ErrNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("scylla: views: current generation: %w", err)
	}
	return gen, nil
}

// Open returns generation gen's views when all its tables exist, and an
// error wrapping readmodel.ErrNotFound when any is missing: it creates
// none, so that a generation dropped meanwhile is never re-created empty.
// Opening a generation again returns the same Views, whose Changes every
// reader and writer of this catalog then shares, until Drop. It returns an
// error for a negative gen and when Cassandra fails.
func (c *Catalog) Open(ctx context.Context, gen int64) (readmodel.Generation, error) {
	return c.open(ctx, gen, false)
}

// Create returns generation gen's views, creating its tables when any is
// missing (with the DDL of createStatements) and waiting until every node
// agrees on the schema. Under a fence it first checks the lease's epoch
// (checkFence), and creates nothing for a holder whose lease was taken.
//
// Creating a table from two processes at once can leave Cassandra with two
// table ids for one name; only the rebuild runner creates a generation,
// and Create creates nothing when the tables exist.
func (c *Catalog) Create(ctx context.Context, gen int64) (readmodel.Generation, error) {
	if err := checkFence(ctx, c.session.Session, c.consistency, fmt.Sprintf("create generation %d", gen)); err != nil {
		return nil, fmt.Errorf("scylla: views: %w", err)
	}
	return c.open(ctx, gen, true)
}

func (c *Catalog) open(ctx context.Context, gen int64, create bool) (readmodel.Generation, error) {
	if gen < 0 {
		return nil, fmt.Errorf("scylla: views: open generation %d: negative", gen)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.views[gen]; ok {
		return v, nil
	}
	if create {
		if err := c.create(ctx, gen); err != nil {
			return nil, fmt.Errorf("scylla: views: create generation %d: %w", gen, err)
		}
	} else {
		have, err := c.tables(ctx)
		if err != nil {
			return nil, fmt.Errorf("scylla: views: open generation %d: %w", gen, err)
		}
		for _, name := range tablesOf(gen).all() {
			if !have[name] {
				return nil, fmt.Errorf("scylla: views: open generation %d: %w: it has no table %s", gen, readmodel.ErrNotFound, name)
			}
		}
	}
	v := NewViews(c.session, c.log, append(slices.Clone(c.opts), WithGeneration(gen))...)
	c.views[gen] = v
	return v, nil
}

// create creates gen's tables unless all three exist.
func (c *Catalog) create(ctx context.Context, gen int64) error {
	have, err := c.tables(ctx)
	if err != nil {
		return err
	}
	missing := false
	for _, name := range tablesOf(gen).all() {
		missing = missing || !have[name]
	}
	if !missing {
		return nil
	}
	for _, stmt := range createStatements(gen) {
		if err := c.session.Session.Query(stmt).WithContext(ctx).Idempotent(true).SetRequestTimeout(schemaTimeout).Exec(); err != nil {
			return fmt.Errorf("create tables: %w", err)
		}
	}
	c.log.Info("created read model tables", zap.Int64("generation", gen))
	return c.agree(ctx)
}

// agree waits until every node has the same schema, so that the tables a
// DDL statement made or dropped are so for every instance's requests.
func (c *Catalog) agree(ctx context.Context) error {
	if err := c.session.Session.AwaitSchemaAgreement(ctx); err != nil {
		return fmt.Errorf("await schema agreement: %w", err)
	}
	return nil
}

// tables returns the names of the keyspace's tables.
func (c *Catalog) tables(ctx context.Context) (map[string]bool, error) {
	iter := c.session.Session.Query(tablesCQL, c.keyspace).WithContext(ctx).Idempotent(true).Iter()
	have := map[string]bool{}
	var name string
	for iter.Scan(&name) {
		have[name] = true
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("list the tables of keyspace %s: %w", c.keyspace, err)
	}
	return have, nil
}

// Generations lists, in ascending order, the generations whose order table
// exists in the keyspace's schema. It returns an error when Cassandra
// fails.
func (c *Catalog) Generations(ctx context.Context) ([]int64, error) {
	have, err := c.tables(ctx)
	if err != nil {
		return nil, fmt.Errorf("scylla: views: generations: %w", err)
	}
	var gens []int64
	for name := range have {
		m := generationTable.FindStringSubmatch(name)
		switch {
		case m == nil:
		case m[1] == "":
			gens = append(gens, 0)
		default:
			gen, err := strconv.ParseInt(m[1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("scylla: views: generations: table %s: %w", name, err)
			}
			gens = append(gens, gen)
		}
	}
	slices.Sort(gens)
	return gens, nil
}

// Promote makes gen the current generation in place of from: a
// lightweight transaction on the generation's row, conditional on the
// generation and the epoch it read there (at serial consistency), retried
// while another write comes in between. Once it returns, Current answers
// gen on every instance. It returns an error wrapping
// readmodel.ErrNotCurrent, changing nothing, when from is not current, and
// an error, changing nothing, when gen has no tables or Cassandra fails.
//
// Under a fence (store.WithFence) it checks the lease's epoch first
// (checkFence), and writes its epoch into the row with the generation,
// refusing with store.ErrFenced when the row has a later one: a successor
// that dropped (stamping its epoch first, see Drop) has made every promote
// of an earlier epoch fail in the same Paxos round as its own write.
func (c *Catalog) Promote(ctx context.Context, from, gen int64) error {
	what := fmt.Sprintf("promote generation %d", gen)
	if err := checkFence(ctx, c.session.Session, c.consistency, what); err != nil {
		return fmt.Errorf("scylla: views: %w", err)
	}
	have, err := c.tables(ctx)
	if err != nil {
		return fmt.Errorf("scylla: views: %s: %w", what, err)
	}
	for _, name := range tablesOf(gen).all() {
		if !have[name] {
			return fmt.Errorf("scylla: views: %s: it has no table %s", what, name)
		}
	}
	f, fenced := store.FenceOf(ctx)
	for {
		cur, epoch, err := c.readGeneration(ctx)
		if err != nil {
			return fmt.Errorf("scylla: views: %s: %w", what, err)
		}
		switch {
		case deref(cur) != from:
			return fmt.Errorf("scylla: views: %s in place of %d: %w (generation %d is)", what, from, readmodel.ErrNotCurrent, deref(cur))
		case fenced && deref(epoch) > f.Epoch:
			return fmt.Errorf("scylla: views: %w", store.Fenced(what, f, deref(epoch)))
		}
		next := epoch // unfenced: the epoch stays
		if fenced {
			next = &f.Epoch
		}
		applied, err := c.session.Session.Query(promoteCQL, gen, ptrArg(next), ptrArg(cur), ptrArg(epoch)).WithContext(ctx).
			Consistency(c.consistency).SerialConsistency(leaseSerial).MapScanCAS(map[string]any{})
		if err != nil {
			return fmt.Errorf("scylla: views: %s: %w", what, err)
		}
		if applied {
			c.log.Info("promoted read model generation", zap.Int64("generation", gen), zap.Int64("from", from))
			return nil
		}
	}
}

// stamp writes f's epoch into the generation's row unless a later one is
// there (then it returns an error wrapping store.ErrFenced).
func (c *Catalog) stamp(ctx context.Context, f store.Fence, what string) error {
	for {
		_, epoch, err := c.readGeneration(ctx)
		if err != nil {
			return err
		}
		switch e := deref(epoch); {
		case e > f.Epoch:
			return store.Fenced(what, f, e)
		case e == f.Epoch:
			return nil
		}
		applied, err := c.session.Session.Query(stampGenerationCQL, f.Epoch, ptrArg(epoch)).WithContext(ctx).
			Consistency(c.consistency).SerialConsistency(leaseSerial).MapScanCAS(map[string]any{})
		if err != nil {
			return err
		}
		if applied {
			return nil
		}
	}
}

// readGeneration reads the current generation and its epoch at serial
// consistency; nil for what was never written.
func (c *Catalog) readGeneration(ctx context.Context) (gen, epoch *int64, err error) {
	err = c.session.Session.Query(generationReadCQL).WithContext(ctx).Consistency(leaseSerial).Idempotent(true).Scan(&gen, &epoch)
	if errors.Is(err, gocql.ErrNotFound) {
		return nil, nil, nil
	}
	return gen, epoch, err
}

// deref is *p, 0 for nil.
func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// ptrArg binds p's value, null for nil.
func ptrArg(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}

// Drop drops generation gen's tables, waits until every node agrees on the
// schema, and forgets the Views Open returned for it, first waking their
// readers (Broadcast) so that they look again at whatever is current. It
// returns an error, dropping nothing, when gen is the current generation,
// and when Cassandra fails. A generation without tables is a no-op.
func (c *Catalog) Drop(ctx context.Context, gen int64) error {
	what := fmt.Sprintf("drop generation %d", gen)
	if f, ok := store.FenceOf(ctx); ok {
		// Check the lease, then stamp the epoch into the generation's row:
		// from then on no promote of an earlier epoch applies, so the
		// current generation read below stays current.
		if err := checkFence(ctx, c.session.Session, c.consistency, what); err != nil {
			return fmt.Errorf("scylla: views: %w", err)
		}
		if err := c.stamp(ctx, f, what); err != nil {
			return fmt.Errorf("scylla: views: %w", err)
		}
	}
	cur, _, err := c.readGeneration(ctx)
	if err != nil {
		return fmt.Errorf("scylla: views: %s: %w", what, err)
	}
	if gen == deref(cur) {
		return fmt.Errorf("scylla: views: drop generation %d: it is the current generation", gen)
	}
	have, err := c.tables(ctx)
	if err != nil {
		return fmt.Errorf("scylla: views: drop generation %d: %w", gen, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.views[gen]; ok {
		delete(c.views, gen)
		v.Broadcast()
	}
	dropped := false
	for _, name := range tablesOf(gen).all() {
		if !have[name] {
			continue
		}
		if err := c.session.Session.Query(`DROP TABLE IF EXISTS ` + name).WithContext(ctx).Idempotent(true).SetRequestTimeout(schemaTimeout).Exec(); err != nil {
			return fmt.Errorf("scylla: views: drop generation %d: table %s: %w", gen, name, err)
		}
		dropped = true
	}
	if !dropped {
		return nil
	}
	c.log.Info("dropped read model generation", zap.Int64("generation", gen))
	if err := c.agree(ctx); err != nil {
		return fmt.Errorf("scylla: views: drop generation %d: %w", gen, err)
	}
	return nil
}

var _ readmodel.Catalog = (*Catalog)(nil)
