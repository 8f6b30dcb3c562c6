package cql

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// The statements on data keys. Create and Rewrap are lightweight
// transactions at Config.SerialConsistency, and Get reads at it, so that a
// key read right after another instance's erasure is seen erased. Mint and
// Erase are plain writes whose timestamps order them against the rest:
// Mint's lowest (1), so that every other write overrides it, and Erase's
// eraseLead ahead of the clock (see Erase).
const (
	dataKeyCreateCQL = `INSERT INTO data_keys (subject, kek, wrapped, created_at) VALUES (?, ?, ?, ?) IF NOT EXISTS`
	dataKeyMintCQL   = `INSERT INTO data_keys (subject, kek, wrapped, created_at) VALUES (?, ?, ?, ?) USING TIMESTAMP 1`
	dataKeyGetCQL    = `SELECT kek, wrapped, created_at, erased_at FROM data_keys WHERE subject = ?`
	dataKeyEraseCQL  = `INSERT INTO data_keys (subject, kek, wrapped, erased_at) VALUES (?, null, null, ?) USING TIMESTAMP ?`
	dataKeyRewrapCQL = `UPDATE data_keys SET kek = ?, wrapped = ? WHERE subject = ? IF kek = ? AND erased_at = null`
	dataKeyScanCQL   = `SELECT subject, kek, wrapped, created_at, erased_at FROM data_keys`
)

// eraseLead is how far ahead of the clock an erasure is stamped: further
// than any clock in the cluster is off, and within the 3 days ScyllaDB
// accepts (restrict_future_timestamp).
const eraseLead = 24 * time.Hour

// DataKeys is the store.DataKeys of a Store, on its session.
//
// What of an erased key may remain: the erasure overwrites the row's cells
// with nulls, but the earlier cells stay in SSTables (and in commit logs
// and per-node snapshots) until compaction purges them, after the table's
// gc_grace_seconds. They are wrapped: retiring the KEK that wrapped them
// (orderd keys rotate) makes them unreadable at once.
type DataKeys struct{ s *Store }

// DataKeys returns the store's data key store.
func (s *Store) DataKeys() *DataKeys { return &DataKeys{s: s} }

// Create stores k unless its subject has a row, and returns the stored key
// (the LWT's answer holds the row that beat it).
func (d *DataKeys) Create(ctx context.Context, k store.WrappedKey) (store.WrappedKey, error) {
	s := d.s
	if s.closed.Load() {
		return store.WrappedKey{}, store.ErrClosed
	}
	created := k.Created.UTC().Truncate(time.Millisecond)
	cur := map[string]any{}
	applied, err := s.lwt(ctx, dataKeyCreateCQL, gocqlUUID(k.Subject), k.KEK, k.Wrapped, created).
		Idempotent(true).MapScanCAS(cur)
	if err != nil {
		return store.WrappedKey{}, fmt.Errorf("scylla: create data key of %s: %w", k.Subject, s.closedOr(ctx, err))
	}
	if applied {
		k.Created = created
		return k, nil
	}
	got, err := dataKeyFromRow(k.Subject, cur)
	if err != nil {
		return store.WrappedKey{}, fmt.Errorf("scylla: create data key of %s: %w", k.Subject, err)
	}
	return got, nil
}

// Get returns the subject's key, read at the serial consistency.
func (d *DataKeys) Get(ctx context.Context, subject uuid.UUID) (store.WrappedKey, error) {
	s := d.s
	if s.closed.Load() {
		return store.WrappedKey{}, store.ErrClosed
	}
	row := map[string]any{}
	err := s.sess.Session.Query(dataKeyGetCQL, gocqlUUID(subject)).WithContext(withSerialRead(ctx)).
		Consistency(s.cfg.SerialConsistency).Idempotent(true).MapScan(row)
	switch {
	case errors.Is(err, gocql.ErrNotFound):
		return store.WrappedKey{}, fmt.Errorf("scylla: data key of %s: %w", subject, store.ErrKeyNotFound)
	case err != nil:
		return store.WrappedKey{}, fmt.Errorf("scylla: data key of %s: %w", subject, s.closedOr(ctx, err))
	}
	k, err := dataKeyFromRow(subject, row)
	if err != nil {
		return store.WrappedKey{}, fmt.Errorf("scylla: data key of %s: %w", subject, err)
	}
	return k, nil
}

// dataKeyFromRow reads a row of data_keys: ErrKeyErased for a tombstone.
func dataKeyFromRow(subject uuid.UUID, m map[string]any) (store.WrappedKey, error) {
	if t, ok := m["erased_at"].(time.Time); ok && !t.IsZero() {
		return store.WrappedKey{}, store.ErrKeyErased
	}
	k := store.WrappedKey{Subject: subject}
	k.KEK, _ = m["kek"].(string)
	k.Wrapped, _ = m["wrapped"].([]byte)
	if t, ok := m["created_at"].(time.Time); ok {
		k.Created = t.UTC()
	}
	return k, nil
}

// Mint writes k plainly at timestamp 1: no Paxos round, and any key,
// tombstone or rewrap that Create, Erase or Rewrap wrote wins over it,
// whichever ran first. The driver may retry it: the retry writes the same
// cells at the same timestamp.
func (d *DataKeys) Mint(ctx context.Context, k store.WrappedKey) error {
	s := d.s
	if s.closed.Load() {
		return store.ErrClosed
	}
	created := k.Created.UTC().Truncate(time.Millisecond)
	err := s.sess.Session.Query(dataKeyMintCQL, gocqlUUID(k.Subject), k.KEK, k.Wrapped, created).
		WithContext(ctx).Idempotent(true).Exec()
	if err != nil {
		return fmt.Errorf("scylla: mint data key of %s: %w", k.Subject, s.closedOr(ctx, err))
	}
	return nil
}

// Erase overwrites the subject's key with a tombstone, or writes one when
// the subject has no row, in one plain write (no Paxos round) stamped
// eraseLead ahead of this clock. What could bring the key back is a write
// stamped later that was decided before the erasure became visible: a
// Rewrap or Create whose Paxos read ran first. Paxos stamps it with the
// time it commits, seconds at most after the erasure, so it loses on every
// cell the erasure writes; a write decided later sees erased_at and is
// refused (Rewrap) or answered with the tombstone (Create). The erasure's
// write reaches Config.Consistency's replicas (the session's), which a
// read at Config.SerialConsistency (Get's) sees.
func (d *DataKeys) Erase(ctx context.Context, subject uuid.UUID, at time.Time) error {
	s := d.s
	if s.closed.Load() {
		return store.ErrClosed
	}
	at = at.UTC().Truncate(time.Millisecond)
	stamp := time.Now().Add(eraseLead).UnixMicro()
	err := s.sess.Session.Query(dataKeyEraseCQL, gocqlUUID(subject), at, stamp).
		WithContext(ctx).Idempotent(true).Exec()
	if err != nil {
		return fmt.Errorf("scylla: erase data key of %s: %w", subject, s.closedOr(ctx, err))
	}
	return nil
}

// Rewrap replaces the wrapped key if it is still under fromKEK and not
// erased.
func (d *DataKeys) Rewrap(ctx context.Context, fromKEK string, k store.WrappedKey) (bool, error) {
	s := d.s
	if s.closed.Load() {
		return false, store.ErrClosed
	}
	applied, err := s.lwt(ctx, dataKeyRewrapCQL, k.KEK, k.Wrapped, gocqlUUID(k.Subject), fromKEK).
		Idempotent(true).MapScanCAS(map[string]any{})
	if err != nil {
		return false, fmt.Errorf("scylla: rewrap data key of %s: %w", k.Subject, s.closedOr(ctx, err))
	}
	return applied, nil
}

// Scan pages through the whole table (the driver pages), skipping
// tombstones. It reads at Config.Consistency: a rotation that misses a key
// created meanwhile finds it on its next pass.
func (d *DataKeys) Scan(ctx context.Context, fn func(store.WrappedKey) error) error {
	s := d.s
	if s.closed.Load() {
		return store.ErrClosed
	}
	iter := s.sess.Session.Query(dataKeyScanCQL).WithContext(ctx).PageSize(500).Idempotent(true).Iter()
	for {
		row := map[string]any{}
		if !iter.MapScan(row) {
			break
		}
		k, err := dataKeyFromRow(fromGocql(row["subject"]), row)
		if errors.Is(err, store.ErrKeyErased) {
			continue
		}
		if err := fn(k); err != nil {
			_ = iter.Close()
			return err
		}
	}
	if err := iter.Close(); err != nil {
		return fmt.Errorf("scylla: scan data keys: %w", s.closedOr(ctx, err))
	}
	return nil
}

var _ store.DataKeys = (*DataKeys)(nil)
