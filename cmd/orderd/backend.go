package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/api"
	"github.com/orderd/orderd/internal/cql"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/store"
)

// backend is the storage engine of ORDERD_STORE with every port orderd
// needs, on one handle: the engine's Backend (which says what run must know
// of it, and closes every port at once), its ports as run uses them, and the
// read models' current generation. The embedded engine keeps them in files
// of the data dir; the CQL engine keeps all of them in the keyspace, so
// that its instances are stateless.
type backend struct {
	engine
	// events is the event store, also its change feed, its leases, its
	// whole history (for rebuilds) and its record of storage faults.
	events eventStore
	// feed is events' feed, or the draining feed over it (see run).
	feed  store.Feed
	keys  store.Idempotency // the records of Idempotency-Keys
	snaps store.Snapshots   // the aggregates' snapshots, a cache
	// datakeys are the wrapped data keys of personal data.
	datakeys store.DataKeys
	claims   store.EmailClaims
	catalog  readmodel.Catalog
	ledger   relay.Ledger
	// views are the read models' current generation, which queries read
	// and the projector writes, in catalog.
	views *readmodel.Live
	// positions is the event store in its global commit order, which
	// GET /v1/events/stream reads; nil on CQL, which has none.
	positions api.EventLog
	// backups takes online backups (POST /v1/admin/backups); on CQL it
	// refuses, pointing to the per-node snapshot procedure.
	backups api.Backups
	// hintsDropped counts the Cassandra hints dropped since start (nil:
	// the engine writes none).
	hintsDropped func() int64
	// handOffsDropped counts the appends not handed in memory to this
	// instance's own workers since start (nil on SQLite, whose feed is
	// in memory whole).
	handOffsDropped func() int64
	// reconciliation reports the CQL feed's reconciliation (nil on
	// SQLite, which needs none).
	reconciliation func() cql.Reconciliation
}

// engine is what both engines' Backend say about themselves.
type engine interface {
	// ExactLag: the feed's Lag is exact, so a drain waits for a lag of
	// zero (SQLite); else it finishes the batch in hand (CQL).
	ExactLag() bool
	// SharedLeases: other instances compete for the workers' leases, so a
	// draining worker stops while its last renewal still holds.
	SharedLeases() bool
	// SharedViews: other instances may switch the read models'
	// generation, so this one looks every second (readmodel.Live.Track).
	SharedViews() bool
	// ReadPoll is how often a min_version read polls its row, where the
	// projector may be another instance's (see readmodel.NewQueries).
	ReadPoll() time.Duration
	// Ping is what /readyz asks of the store: that it can write (an error
	// wrapping store.ErrUnavailable while a storage fault lasts: the store
	// then probes with a tiny write) and a real read.
	Ping(ctx context.Context) error
	// Close closes every port.
	Close() error
}

// eventStore is the event store with the ports that are the store itself
// on both engines.
type eventStore interface {
	store.Store
	store.Feed
	store.Leases
	store.Membership
	store.Log
	store.WriteHealth
}

// projectorConsumer is the feed consumer that writes the read models: its
// progress is saved only after the views are synced (sqlite's
// Config.ViewsConsumer), and a backup drops it.
const projectorConsumer = "projector"

// viewCacheRows is how many orders, and as many customers, the SQLite read
// models keep in memory: about 6 MB of orders.
const viewCacheRows = 20_000

// openBackend opens the storage engine of cfg.store, bringing its schema up
// to date: the one place that picks the engine (run and `orderd migrate`
// both come here). The caller must Close it.
func openBackend(ctx context.Context, cfg config, log *zap.Logger) (*backend, error) {
	var b *backend
	switch cfg.store {
	case "sqlite":
		e, err := sqlite.Open(ctx, sqlite.Config{
			Dir: cfg.dataDir, Upcaster: aggregate.Upcasters(), Logger: log,
			KeysPurgeEvery: min(cfg.idempotencyTTL, sqlite.DefaultPurgeEvery), ViewCacheRows: viewCacheRows,
			// A backup copies no read models (see sqlite.Backend.Backup):
			// the restored projector starts from the first event.
			Forget: []string{projectorConsumer},
			// The projector saves its progress only after syncing the
			// views, which then commit without an fsync each.
			ViewsConsumer: projectorConsumer,
		})
		if err != nil {
			return nil, err
		}
		b = &backend{engine: e, events: e.Store, keys: e.Keys, snaps: e.Snapshots, catalog: e.Catalog, ledger: e.Ledger,
			positions: e.Store, backups: e, datakeys: e.DataKeys, claims: e.Claims}
	case "scylla":
		c := cfg.scylla
		c.Upcaster, c.Logger, c.Feed = aggregate.Upcasters(), log, cfg.feed
		// The projector's rows are stamped with their version, so an event
		// handed again changes nothing: a creation costs it no progress read.
		c.Feed.Redeliverable = []string{projectorConsumer}
		e, err := cql.Open(ctx, c)
		if err != nil {
			return nil, err
		}
		b = &backend{engine: e, events: e.Store, keys: e.Store, snaps: e.Store, catalog: e.Catalog, ledger: e.Ledger,
			hintsDropped: e.Store.HintsDropped, handOffsDropped: e.Store.HandOffsDropped, reconciliation: e.Store.Reconciliation, backups: noBackups{}, datakeys: e.DataKeys, claims: e.Claims}
	default:
		return nil, fmt.Errorf("store %q: want sqlite or scylla", cfg.store)
	}
	b.feed = b.events
	views, err := openLive(ctx, b.catalog, b.events, log)
	if err != nil {
		return nil, errors.Join(err, b.Close())
	}
	b.views = views
	return b, nil
}

// openLive opens the current generation of the read models in catalog.
func openLive(ctx context.Context, catalog readmodel.Catalog, events store.Store, log *zap.Logger) (*readmodel.Live, error) {
	cur, err := catalog.Current(ctx)
	if err != nil {
		return nil, err
	}
	g, err := catalog.Open(ctx, cur)
	if err != nil {
		return nil, err
	}
	log.Info("read models", zap.Int64("generation", cur))
	return readmodel.NewLive(cur, g, events, log.Named("views")), nil
}

var storageFaultsDesc = prometheus.NewDesc("orderd_storage_faults_total",
	"Storage faults (a full disk, a read-only file system, an I/O error; on CQL unavailable replicas, timeouts, no host) met by the store, by operation.",
	[]string{"op"}, nil)

// storageFaultCollector reports the store's storage faults by operation
// (append, progress, read, keys on SQLite; append, cql on CQL).
type storageFaultCollector struct{ health store.WriteHealth }

func (c storageFaultCollector) Describe(ch chan<- *prometheus.Desc) { ch <- storageFaultsDesc }

func (c storageFaultCollector) Collect(ch chan<- prometheus.Metric) {
	for op, n := range c.health.StorageFaults() {
		ch <- prometheus.MustNewConstMetric(storageFaultsDesc, prometheus.CounterValue, float64(n), op)
	}
}
