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

// The statements on data keys. Every write is a lightweight transaction at
// Config.SerialConsistency, and Get reads at it too, so that a key read
// right after another instance's erasure is seen erased.
const (
	dataKeyCreateCQL = `INSERT INTO data_keys (subject, kek, wrapped, created_at) VALUES (?, ?, ?, ?) IF NOT EXISTS`
	dataKeyGetCQL    = `SELECT kek, wrapped, created_at, erased_at FROM data_keys WHERE subject = ?`
	dataKeyEraseCQL  = `UPDATE data_keys SET kek = null, wrapped = null, erased_at = ? WHERE subject = ? IF EXISTS`
	// dataKeyTombCQL erases a subject that has no row yet.
	dataKeyTombCQL   = `INSERT INTO data_keys (subject, created_at, erased_at) VALUES (?, ?, ?) IF NOT EXISTS`
	dataKeyRewrapCQL = `UPDATE data_keys SET kek = ?, wrapped = ? WHERE subject = ? IF kek = ? AND erased_at = null`
	dataKeyScanCQL   = `SELECT subject, kek, wrapped, created_at, erased_at FROM data_keys`
)

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

// Erase overwrites the subject's key with a tombstone, or writes one when
// the subject has no row; the two conditional writes are tried in turn
// until one applies (a Create between them makes the second fail, and the
// first then applies).
func (d *DataKeys) Erase(ctx context.Context, subject uuid.UUID, at time.Time) error {
	s := d.s
	at = at.UTC().Truncate(time.Millisecond)
	for attempt := 0; ; attempt++ {
		if s.closed.Load() {
			return store.ErrClosed
		}
		cur := map[string]any{}
		applied, err := s.lwt(ctx, dataKeyEraseCQL, at, gocqlUUID(subject)).Idempotent(true).MapScanCAS(cur)
		if err == nil && !applied {
			applied, err = s.lwt(ctx, dataKeyTombCQL, gocqlUUID(subject), at, at).Idempotent(true).MapScanCAS(map[string]any{})
		}
		if err != nil {
			return fmt.Errorf("scylla: erase data key of %s: %w", subject, s.closedOr(ctx, err))
		}
		if applied {
			return nil
		}
		if attempt == 10 {
			return fmt.Errorf("scylla: erase data key of %s: raced 10 creations: %w", subject, store.ErrUnavailable)
		}
	}
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
