package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/store"
)

// Config says where the embedded engine keeps its files and how it opens
// them. Only Dir is required.
type Config struct {
	// Dir is the data directory, created when missing: events.db (the
	// event store, which locks the directory for this process), keys.db,
	// datakeys.db, snapshots.db, relay.db, readmodels.db and the views' files.
	Dir string
	// Upcaster is applied to every event read; nil upcasts nothing.
	Upcaster store.Upcaster
	// Logger is the root of the ports' named loggers; nil logs nothing.
	Logger *zap.Logger
	// Forget names the feed consumers whose progress a backup drops (see
	// Backend.Backup): the projector, whose read models it does not copy.
	Forget []string
	// KeysPurgeEvery is how often expired idempotency records are deleted;
	// 0 means DefaultPurgeEvery.
	KeysPurgeEvery time.Duration
	// ViewCacheRows is how many orders, and as many customers, the read
	// models keep in memory; 0: no row cache.
	ViewCacheRows int
	// ViewsConsumer names the feed consumer that writes the read models
	// (the projector): the views then commit without an fsync each
	// (DeferSync), and that consumer's progress is saved only after a
	// Sync of every generation open. Empty: every batch of the views is
	// synced as it commits.
	ViewsConsumer string
}

// Backend is every port of orderd on the files of one data directory, for
// Open's caller to wire.
type Backend struct {
	// Store is the event store and store.Feed, store.Leases, store.Log and
	// store.WriteHealth; it also reads the events in their global commit
	// order (ReadFeed, Head).
	Store *Store
	// Keys is the store.Idempotency on keys.db.
	Keys *Keys
	// Snapshots is the store.Snapshots on snapshots.db.
	Snapshots *Snapshots
	// DataKeys is the store.DataKeys on datakeys.db.
	DataKeys *DataKeys
	// Claims is the store.EmailClaims, on events.db.
	Claims *EmailClaims
	// Catalog is the read models' readmodel.Catalog.
	Catalog *Catalog
	// Ledger is the relay's relay.Ledger on relay.db.
	Ledger *Ledger

	dir     string     // the data directory
	forget  []string   // Config.Forget
	backing sync.Mutex // held by the running backup
}

// Open creates cfg.Dir when missing, opens every file in it, bringing each
// schema up to date, and returns every port. The caller must Close it. It
// returns an error when a file cannot be opened or migrated, or when
// another process holds the directory.
func Open(ctx context.Context, cfg Config) (_ *Backend, err error) {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	b := &Backend{dir: cfg.Dir, forget: cfg.Forget}
	defer func() {
		if err != nil {
			err = errors.Join(err, b.Close())
		}
	}()
	if b.Store, err = OpenStore(filepath.Join(cfg.Dir, "events.db"), Options{Upcaster: cfg.Upcaster, Logger: log.Named("store")}); err != nil {
		return nil, err
	}
	b.Claims = b.Store.EmailClaims()
	// The data directory's lock (events.db) makes this process the views'
	// only writer, which the row cache needs.
	// Every write of a worker is fenced by the leases of this process
	// (see leases.hold).
	opts := []ViewsOption{FencedBy(b.Store)}
	if cfg.ViewCacheRows > 0 {
		opts = append(opts, WithRowCache(cfg.ViewCacheRows))
	}
	if cfg.ViewsConsumer != "" {
		opts = append(opts, DeferSync())
	}
	if b.Catalog, err = OpenCatalog(ctx, cfg.Dir, log.Named("views"), opts...); err != nil {
		return nil, err
	}
	if cfg.ViewsConsumer != "" {
		b.Store.SyncBeforeSave(cfg.ViewsConsumer, b.Catalog.Sync)
	}
	if b.Ledger, err = OpenLedger(filepath.Join(cfg.Dir, "relay.db"), log.Named("ledger")); err != nil {
		return nil, err
	}
	b.Ledger.FencedBy(b.Store)
	if b.Keys, err = OpenKeys(filepath.Join(cfg.Dir, "keys.db"), KeysOptions{
		Logger: log.Named("keys"), PurgeEvery: cfg.KeysPurgeEvery,
		Health: b.Store.Health(), // one disk, one episode
		Events: b.Store,          // the key's record written with the events
	}); err != nil {
		return nil, err
	}
	if b.Snapshots, err = OpenSnapshots(ctx, filepath.Join(cfg.Dir, "snapshots.db")); err != nil {
		return nil, err
	}
	if b.DataKeys, err = OpenDataKeys(ctx, filepath.Join(cfg.Dir, "datakeys.db")); err != nil {
		return nil, err
	}
	b.DataKeys.health = b.Store.Health() // one disk, one episode
	return b, nil
}

// Close closes every file, the event store last, whose lock on the data
// directory is then released.
func (b *Backend) Close() error {
	var errs []error
	if b.DataKeys != nil {
		errs = append(errs, b.DataKeys.Close())
	}
	if b.Snapshots != nil {
		errs = append(errs, b.Snapshots.Close())
	}
	if b.Keys != nil {
		errs = append(errs, b.Keys.Close())
	}
	if b.Ledger != nil {
		errs = append(errs, b.Ledger.Close())
	}
	if b.Catalog != nil {
		errs = append(errs, b.Catalog.Close())
	}
	if b.Store != nil {
		errs = append(errs, b.Store.Close())
	}
	return errors.Join(errs...)
}

// ExactLag is true: the feed has one global order, so a consumer's
// store.Lag is exact, and a drain waits until it is zero.
func (b *Backend) ExactLag() bool { return true }

// SharedLeases is false: the data directory's lock keeps every other
// process out, so the workers' leases are this instance's alone.
func (b *Backend) SharedLeases() bool { return false }

// SharedViews is false: only this process switches the read models'
// generation.
func (b *Backend) SharedViews() bool { return false }

// ReadPoll is 0: the projector is this process's, so a read with
// min_version is woken by it and never polls.
func (b *Backend) ReadPoll() time.Duration { return 0 }

// Ping checks that the store can write (it probes while a storage fault
// lasts) and makes one real read of events.db. It returns an error
// wrapping store.ErrUnavailable while the disk fails.
func (b *Backend) Ping(ctx context.Context) error {
	if err := b.Store.CheckWrite(ctx); err != nil {
		return err
	}
	_, err := b.Store.Head(ctx)
	return err
}
