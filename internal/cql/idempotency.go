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

// The statements on idempotency keys. Every change is a lightweight
// transaction at Config.SerialConsistency, committed at Config.Consistency,
// and Get reads at the serial consistency, so every instance sees the one
// owner of a key. Each write carries USING TTL the time the record has
// left (see ttlLeft), so that all its cells expire together with the row
// and expiry needs no purge.
const (
	keyColumnsCQL = `key, record_id, fingerprint, owner, state, aggregate_id, status, header, body,
		created_at, updated_at, expires_at, instance, boot`
	keyBeginCQL = `INSERT INTO idempotency_keys (key, record_id, fingerprint, owner, state, aggregate_id,
		created_at, updated_at, expires_at, instance, boot) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?`
	// keyReplaceCQL takes over a key whose record outlived its expiry by
	// the rounding of TTLs (some cells of it may still be live).
	keyReplaceCQL = `UPDATE idempotency_keys USING TTL ? SET record_id = ?, fingerprint = ?, owner = ?,
		state = 'pending', aggregate_id = ?, status = null, header = null, body = null,
		created_at = ?, updated_at = ?, expires_at = ?, instance = ?, boot = ? WHERE key = ? IF record_id = ?`
	keyGetCQL      = `SELECT ` + keyColumnsCQL + ` FROM idempotency_keys WHERE key = ?`
	keyCompleteCQL = `UPDATE idempotency_keys USING TTL ? SET state = 'done', status = ?, header = ?, body = ?,
		updated_at = ? WHERE key = ? IF owner = ?`
	keyAbandonCQL  = `UPDATE idempotency_keys USING TTL ? SET state = 'abandoned', updated_at = ? WHERE key = ? IF owner = ?`
	keyTakeoverCQL = `UPDATE idempotency_keys USING TTL ? SET owner = ?, instance = ?, boot = ?, state = 'pending', updated_at = ?
		WHERE key = ? IF owner = ? AND state IN ('pending', 'abandoned')`
)

// ttlLeft is the TTL, in whole seconds, of a record that expires at
// expires; 0 when it has expired by now. The server expires a cell at the
// start of a second, up to a second before the TTL has passed (see
// Acquire), so it is rounded up and one more second added: the row
// outlives Expires by up to two seconds, never the other way round. Get
// ignores a row past its Expires, and Begin replaces one.
func ttlLeft(expires, now time.Time) int {
	left := expires.Sub(now)
	if left <= 0 {
		return 0
	}
	return int((left+time.Second-1)/time.Second) + 1
}

// Begin claims rec.Key unless an unexpired record holds it. It returns
// store.ErrClosed after Close.
func (s *Store) Begin(ctx context.Context, rec store.IdempotencyRecord) (store.IdempotencyRecord, bool, error) {
	if s.closed.Load() {
		return rec, false, store.ErrClosed
	}
	rec.State, rec.Response = store.Pending, store.IdempotentResponse{}
	ttl := ttlLeft(rec.Expires, rec.Created)
	if ttl == 0 {
		return rec, false, fmt.Errorf("scylla: begin key %q: expires %v, not after %v", rec.Key, rec.Expires, rec.Created)
	}
	// A record at the edge of its expiry can vanish between the two
	// conditional writes below (the insert sees it, the replace finds it
	// gone); the key is then free, so begin again. Three rounds are plenty:
	// a row expires once.
	for range 3 {
		got, began, done, err := s.beginOnce(ctx, rec, ttl)
		if err != nil || done {
			return got, began, err
		}
	}
	return rec, false, fmt.Errorf("scylla: begin key %q: lost three races for an expired record", rec.Key)
}

// beginOnce is one round of Begin: done is false when the expired record
// it meant to replace was gone before it could.
func (s *Store) beginOnce(ctx context.Context, rec store.IdempotencyRecord, ttl int) (_ store.IdempotencyRecord, began, done bool, _ error) {
	cur := map[string]any{}
	applied, err := s.lwt(ctx, keyBeginCQL, rec.Key, gocqlUUID(rec.ID), rec.Fingerprint, gocqlUUID(rec.Owner),
		nullableUUID(rec.AggregateID), rec.Created, rec.Updated, rec.Expires, rec.Process.Instance, gocqlUUID(rec.Process.Boot), ttl).MapScanCAS(cur)
	if err != nil {
		return rec, false, true, fmt.Errorf("scylla: begin key %q: %w", rec.Key, s.closedOr(ctx, err))
	}
	if applied {
		return rec, true, true, nil
	}
	got := keyFromMap(cur)
	if got.Expires.After(rec.Created) {
		return got, false, true, nil
	}
	// What is left of a record past its expiry: replace it, unless another
	// Begin did first.
	var stale any // null when the record id cell is gone already
	if got.ID != uuid.Nil {
		stale = gocqlUUID(got.ID)
	}
	cur = map[string]any{}
	applied, err = s.lwt(ctx, keyReplaceCQL, ttl, gocqlUUID(rec.ID), rec.Fingerprint, gocqlUUID(rec.Owner),
		nullableUUID(rec.AggregateID), rec.Created, rec.Updated, rec.Expires, rec.Process.Instance, gocqlUUID(rec.Process.Boot), rec.Key, stale).MapScanCAS(cur)
	if err != nil {
		return rec, false, true, fmt.Errorf("scylla: begin key %q: replace an expired record: %w", rec.Key, s.closedOr(ctx, err))
	}
	if applied {
		return rec, true, true, nil
	}
	// Another Begin replaced it, or it expired whole in between.
	other, found, err := s.Get(ctx, rec.Key)
	switch {
	case err != nil:
		return rec, false, true, err
	case !found:
		return rec, false, false, nil
	}
	return other, false, true, nil
}

// Get returns the unexpired record of key, read at the serial consistency.
func (s *Store) Get(ctx context.Context, key string) (store.IdempotencyRecord, bool, error) {
	if s.closed.Load() {
		return store.IdempotencyRecord{}, false, store.ErrClosed
	}
	row := map[string]any{}
	err := s.sess.Session.Query(keyGetCQL, key).WithContext(withSerialRead(ctx)).
		Consistency(s.cfg.SerialConsistency).Idempotent(true).MapScan(row)
	switch {
	case errors.Is(err, gocql.ErrNotFound):
		return store.IdempotencyRecord{}, false, nil
	case err != nil:
		return store.IdempotencyRecord{}, false, fmt.Errorf("scylla: get key %q: %w", key, s.closedOr(ctx, err))
	}
	rec := keyFromMap(row)
	if !rec.Expires.After(time.Now()) {
		return store.IdempotencyRecord{}, false, nil
	}
	return rec, true, nil
}

// Complete stores the answer and marks the record done.
func (s *Store) Complete(ctx context.Context, c store.IdempotencyClaim, resp store.IdempotentResponse, now time.Time) error {
	return s.keyUpdate(ctx, "complete", c, now, keyCompleteCQL, resp.Status, resp.Header, resp.Body, now)
}

// Abandon marks the record abandoned.
func (s *Store) Abandon(ctx context.Context, c store.IdempotencyClaim, now time.Time) error {
	return s.keyUpdate(ctx, "abandon", c, now, keyAbandonCQL, now)
}

// Takeover hands a pending or abandoned record to the attempt to.
func (s *Store) Takeover(ctx context.Context, c store.IdempotencyClaim, to uuid.UUID, by store.Process, now time.Time) (bool, error) {
	err := s.keyUpdate(ctx, "take over", c, now, keyTakeoverCQL, gocqlUUID(to), by.Instance, gocqlUUID(by.Boot), now)
	if errors.Is(err, store.ErrNotOwner) {
		return false, nil
	}
	return err == nil, err
}

// keyUpdate runs a conditional update of c.Key whose arguments are TTL,
// then args, then the key and the owner.
func (s *Store) keyUpdate(ctx context.Context, op string, c store.IdempotencyClaim, now time.Time, stmt string, args ...any) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	ttl := ttlLeft(c.Expires, now)
	if ttl == 0 {
		return fmt.Errorf("scylla: %s key %q: expired: %w", op, c.Key, store.ErrNotOwner)
	}
	args = append(append([]any{ttl}, args...), c.Key, gocqlUUID(c.Owner))
	applied, err := s.lwt(ctx, stmt, args...).MapScanCAS(map[string]any{})
	if err != nil {
		return fmt.Errorf("scylla: %s key %q: %w", op, c.Key, s.closedOr(ctx, err))
	}
	if !applied {
		return fmt.Errorf("scylla: %s key %q: %w", op, c.Key, store.ErrNotOwner)
	}
	return nil
}

// keyFromMap reads a row of idempotency_keys as the driver maps it.
func keyFromMap(m map[string]any) store.IdempotencyRecord {
	var rec store.IdempotencyRecord
	rec.Key, _ = m["key"].(string)
	rec.ID = fromGocql(m["record_id"])
	rec.Fingerprint, _ = m["fingerprint"].([]byte)
	rec.Owner = fromGocql(m["owner"])
	rec.Process.Instance, _ = m["instance"].(string)
	rec.Process.Boot = fromGocql(m["boot"])
	state, _ := m["state"].(string)
	rec.State = store.IdempotencyState(state)
	rec.AggregateID = fromGocql(m["aggregate_id"])
	rec.Response.Status, _ = m["status"].(int)
	rec.Response.Header, _ = m["header"].(map[string]string)
	rec.Response.Body, _ = m["body"].([]byte)
	for col, dst := range map[string]*time.Time{"created_at": &rec.Created, "updated_at": &rec.Updated, "expires_at": &rec.Expires} {
		if t, ok := m[col].(time.Time); ok && !t.IsZero() {
			*dst = t.UTC()
		}
	}
	return rec
}

func gocqlUUID(id uuid.UUID) gocql.UUID { return gocql.UUID(id) }

// nullableUUID is id as a uuid column: null when it is uuid.Nil.
func nullableUUID(id uuid.UUID) any {
	if id == uuid.Nil {
		return nil
	}
	return gocql.UUID(id)
}

// fromGocql converts a uuid column; uuid.Nil when it is null.
func fromGocql(v any) uuid.UUID {
	if id, ok := v.(gocql.UUID); ok {
		return uuid.UUID(id)
	}
	return uuid.Nil
}

var _ store.Idempotency = (*Store)(nil)
