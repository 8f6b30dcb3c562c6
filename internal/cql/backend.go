package cql

import (
	"context"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
)

// Backend is every port of orderd on one CQL keyspace, for Open's caller
// to wire: the event store (also its feed, leases, replay log, idempotency
// keys, snapshots and write health), the read models' catalog and the
// relay's dead-letter ledger. They share the store's session, which Close
// closes.
type Backend struct {
	// Store is the event store and store.Feed, store.Leases, store.Log,
	// store.Idempotency, store.Snapshots and store.WriteHealth.
	Store *Store
	// Catalog is the read models' readmodel.Catalog.
	Catalog *Catalog
	// Ledger is the relay's relay.Ledger.
	Ledger *Ledger
	// DataKeys is the store.DataKeys of personal data.
	DataKeys *DataKeys
	// Claims is the store.EmailClaims of e-mail addresses.
	Claims *EmailClaims
}

// Open connects to the cluster of cfg (whose Logger is the root of the
// ports' named loggers), creates the keyspace when missing,
// brings its schema up to date (the event store's, the read models' and
// the ledger's) and returns every port on one session. The caller must
// Close it. It returns an error when the cluster cannot be reached or the
// schema cannot be applied.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	cfg.Logger = log.Named("store")
	st, err := OpenStore(ctx, cfg, Options{})
	if err != nil {
		return nil, err
	}
	// st.cfg has the defaults applied.
	cons, serial := st.cfg.Consistency, st.cfg.SerialConsistency
	return &Backend{
		Store:    st,
		Catalog:  NewCatalog(st.sess, st.Keyspace(), log.Named("views"), WithConsistency(cons), WithSerialConsistency(serial)),
		Ledger:   NewLedger(st.sess, cons, serial, log.Named("ledger")).sharded(st.Shards()),
		DataKeys: st.DataKeys(),
		Claims:   st.EmailClaims(),
	}, nil
}

// Close closes the session; every port fails after it.
func (b *Backend) Close() error { return b.Store.Close() }

// ExactLag is false: a partitioned store has no global order, so a
// consumer's store.Lag is an estimate, and a drain finishes the batch in
// hand rather than waiting for a lag of zero.
func (b *Backend) ExactLag() bool { return false }

// SharedLeases is true: every orderd instance on the keyspace competes for
// the workers' leases, so a draining worker must stop while the lease it
// renewed last still holds, before a standby may take over.
func (b *Backend) SharedLeases() bool { return true }

// SharedViews is true: another instance's rebuild may switch the read
// models' generation, so each instance looks (readmodel.Live.Track).
func (b *Backend) SharedViews() bool { return true }

// ReadPoll is how often a read with min_version looks at its row again:
// the active projector may be another instance's (one read of one row per
// wait and poll).
func (b *Backend) ReadPoll() time.Duration { return 50 * time.Millisecond }

// Ping checks that the store can write (it probes while a storage fault
// lasts) and makes one real read: loading an aggregate nobody has reads
// the events table. It returns an error wrapping store.ErrUnavailable while
// the cluster fails.
func (b *Backend) Ping(ctx context.Context) error {
	if err := b.Store.CheckWrite(ctx); err != nil {
		return err
	}
	_, err := b.Store.Load(ctx, uuid.Nil, 0)
	return err
}
