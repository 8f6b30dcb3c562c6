package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/api"
	"github.com/orderd/orderd/internal/readmodel"
	viewscylla "github.com/orderd/orderd/internal/readmodel/scylla"
	viewsqlite "github.com/orderd/orderd/internal/readmodel/sqlite"
	"github.com/orderd/orderd/internal/relay"
	relayscylla "github.com/orderd/orderd/internal/relay/scylla"
	relaysqlite "github.com/orderd/orderd/internal/relay/sqlite"
	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/scylla"
	"github.com/orderd/orderd/internal/store/sqlite"
)

// backend is one ORDERD_STORE: the event store with its change feed and
// its leases, the read models, and the relay's dead-letter ledger. The
// embedded backend keeps them in files of the data dir; the CQL backend
// keeps all of them in the keyspace, so that its instances are stateless.
type backend struct {
	events store.Store
	feed   store.Feed
	leases store.Leases
	log    store.Log // the whole history, for rebuilds
	// views are the read models' current generation, which queries read
	// and the projector writes, in the catalog of their generations.
	views   *readmodel.Live
	catalog readmodel.Catalog
	ledger  relay.Ledger
	keys    store.Idempotency // the records of Idempotency-Keys
	snaps   store.Snapshots   // the aggregates' snapshots, a cache
	// positions is the event store in its global commit order, which
	// GET /v1/events/stream reads; nil on CQL, which has none.
	positions api.EventLog
	// trackViews: other instances may switch the read models' generation,
	// so this one looks every second (readmodel.Live.Track).
	trackViews bool
	// readPoll is how often a min_version read polls its row, where the
	// projector may be another instance's (see readmodel.NewQueries).
	readPoll time.Duration
	// hintsDropped counts the Cassandra hints dropped since start (nil:
	// the backend writes none).
	hintsDropped func() int64

	// ping is what /readyz asks of the store: that it can write (nil, or
	// an error wrapping store.ErrUnavailable while a storage fault lasts:
	// the store then probes with a tiny write) and a real read.
	ping func(ctx context.Context) error
	// health is the event store's record of storage faults, for
	// orderd_storage_faults_total.
	health store.WriteHealth
	close  func()
}

// pingStore checks that st can write, then reads with read.
func pingStore(st store.WriteHealth, read func(ctx context.Context) error) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		if err := st.CheckWrite(ctx); err != nil {
			return err
		}
		return read(ctx)
	}
}

// viewCacheRows is how many orders, and as many customers, the SQLite read
// models keep in memory: about 6 MB of orders.
const viewCacheRows = 20_000

func openBackend(ctx context.Context, cfg config, log *zap.Logger) (*backend, error) {
	if cfg.store == "scylla" {
		return openScylla(ctx, cfg, log)
	}
	if err := os.MkdirAll(cfg.dataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	events, err := sqlite.Open(filepath.Join(cfg.dataDir, "events.db"), sqlite.Options{
		Upcaster: aggregate.Upcasters(),
		Logger:   log.Named("store"),
	})
	if err != nil {
		return nil, err
	}
	// The data directory's lock (events.db) makes this process the views'
	// only writer, which the row cache needs.
	catalog, err := viewsqlite.OpenCatalog(ctx, cfg.dataDir, log.Named("views"), viewsqlite.WithRowCache(viewCacheRows))
	if err != nil {
		return nil, errors.Join(err, events.Close())
	}
	views, err := openLive(ctx, catalog, events, log)
	if err != nil {
		return nil, errors.Join(err, catalog.Close(), events.Close())
	}
	ledger, err := relaysqlite.Open(filepath.Join(cfg.dataDir, "relay.db"), log.Named("ledger"))
	if err != nil {
		return nil, errors.Join(err, catalog.Close(), events.Close())
	}
	keys, err := sqlite.OpenKeys(filepath.Join(cfg.dataDir, "keys.db"), sqlite.KeysOptions{
		Logger: log.Named("keys"), PurgeEvery: min(cfg.idempotencyTTL, sqlite.DefaultPurgeEvery),
		Health: events.Health(), // one disk, one episode
	})
	if err != nil {
		return nil, errors.Join(err, ledger.Close(), catalog.Close(), events.Close())
	}
	snaps, err := sqlite.OpenSnapshots(ctx, filepath.Join(cfg.dataDir, "snapshots.db"))
	if err != nil {
		return nil, errors.Join(err, keys.Close(), ledger.Close(), catalog.Close(), events.Close())
	}
	return &backend{
		events: events, feed: events, leases: events, log: events, views: views, catalog: catalog,
		ledger: ledger, keys: keys, snaps: snaps, positions: events,
		ping:   pingStore(events, func(ctx context.Context) error { _, err := events.Head(ctx); return err }),
		health: events,
		close:  func() { snaps.Close(); keys.Close(); ledger.Close(); catalog.Close(); events.Close() },
	}, nil
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

func openScylla(ctx context.Context, cfg config, log *zap.Logger) (*backend, error) {
	events, err := scylla.Open(ctx, cfg.scylla, scylla.Options{
		Upcaster: aggregate.Upcasters(), Logger: log.Named("store"), Feed: cfg.feed,
	})
	if err != nil {
		return nil, err
	}
	sess := events.Session()
	catalog := viewscylla.NewCatalog(sess, events.Keyspace(), log.Named("views"),
		viewscylla.WithConsistency(cfg.scylla.Consistency), viewscylla.WithSerialConsistency(cfg.scylla.SerialConsistency))
	views, err := openLive(ctx, catalog, events, log)
	if err != nil {
		return nil, errors.Join(err, events.Close())
	}
	return &backend{
		events: events, feed: events, leases: events, log: events, keys: events, snaps: events,
		views: views, catalog: catalog,
		// Another instance's rebuild switches generations: see run.
		trackViews: true,
		ledger:     relayscylla.NewLedger(sess, cfg.scylla.Consistency, cfg.scylla.SerialConsistency, log.Named("ledger")),
		// The active projector may be another instance's: a waiting read
		// looks again at this pace (one read of one row per wait and poll).
		readPoll:     50 * time.Millisecond,
		hintsDropped: events.HintsDropped,
		// Loading an aggregate nobody has is one real read of the events
		// table.
		ping:   pingStore(events, func(ctx context.Context) error { _, err := events.Load(ctx, uuid.Nil, 0); return err }),
		health: events,
		close:  func() { events.Close() },
	}, nil
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
