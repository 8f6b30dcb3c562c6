package sqlite

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// journalInsertSQL writes a key's record into events.db's journal, in the
// event writer's transaction (see keyJournal).
const journalInsertSQL = `INSERT INTO idempotency_journal
	(key, record_id, fingerprint, owner, aggregate_id, created_at, expires_at, instance, boot)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`

// claimTTL bounds how long an unused claim is kept in memory: an attempt
// runs for far less (api.Idempotency ends it at half its Takeover).
const claimTTL = 10 * time.Minute

// keyJournal holds the records of the idempotency keys whose commands run
// in this process, so that the event writer can write a key's record into
// events.db (table idempotency_journal) in the same transaction as the
// command's events: the record is then durable exactly when the events are,
// under their one group-committed fsync, and keys.db needs no fsync of its
// own before the command appends (see Keys). A record is handed to the
// append whose events carry its id (store.MetaIdempotencyRecord) and is
// dropped once an append carrying it committed (the journal holds it
// then), or when its attempt stores an answer or abandons the key.
type keyJournal struct {
	mu     sync.Mutex
	claims map[string]journalClaim // by key
}

type journalClaim struct {
	record string // the record's id, as the events carry it
	args   []any  // journalInsertSQL's arguments
	added  time.Time
}

// claim keeps rec, the record of a key an attempt of this process now owns.
func (j *keyJournal) claim(rec store.IdempotencyRecord) {
	var agg any // NULL for uuid.Nil
	if rec.AggregateID != uuid.Nil {
		agg = rec.AggregateID.String()
	}
	id := rec.ID.String()
	c := journalClaim{record: id, added: time.Now(), args: []any{rec.Key, id, rec.Fingerprint, rec.Owner.String(), agg,
		formatTime(rec.Created), formatTime(rec.Expires), rec.Process.Instance, rec.Process.Boot.String()}}
	j.mu.Lock()
	if j.claims == nil {
		j.claims = map[string]journalClaim{}
	}
	j.claims[rec.Key] = c
	j.mu.Unlock()
}

// of returns the journal insert's arguments for an append of events, when
// they are a keyed command's whose record is kept here; nil otherwise.
func (j *keyJournal) of(events []store.Event) (args []any, key, record string) {
	if len(events) == 0 || len(events[0].Metadata) == 0 {
		return nil, "", ""
	}
	key, record = events[0].Metadata[store.MetaIdempotencyKey], events[0].Metadata[store.MetaIdempotencyRecord]
	if record == "" {
		return nil, "", ""
	}
	j.mu.Lock()
	c, ok := j.claims[key]
	j.mu.Unlock()
	if !ok || c.record != record {
		return nil, "", ""
	}
	return c.args, key, record
}

// forget drops the record of key, if it is record (any when empty).
func (j *keyJournal) forget(key, record string) {
	j.mu.Lock()
	if c, ok := j.claims[key]; ok && (record == "" || c.record == record) {
		delete(j.claims, key)
	}
	j.mu.Unlock()
}

// sweep drops the records kept since before t: their attempts have ended.
func (j *keyJournal) sweep(t time.Time) {
	j.mu.Lock()
	for k, c := range j.claims {
		if c.added.Before(t) {
			delete(j.claims, k)
		}
	}
	j.mu.Unlock()
}

// journalRecord is a row of the journal.
type journalRecord struct {
	seq  int64
	args []any // as journalInsertSQL's
}

// readJournal returns the journal's rows, oldest first.
func (s *Store) readJournal(ctx context.Context) ([]journalRecord, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT seq, key, record_id, fingerprint, owner, aggregate_id, created_at,
		expires_at, instance, boot FROM idempotency_journal ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: read the key journal: %w", err)
	}
	defer rows.Close()
	var out []journalRecord
	for rows.Next() {
		var (
			r                                                journalRecord
			key, id, owner, created, expires, instance, boot string
			fp                                               []byte
			agg                                              any
		)
		if err := rows.Scan(&r.seq, &key, &id, &fp, &owner, &agg, &created, &expires, &instance, &boot); err != nil {
			return nil, fmt.Errorf("sqlite: read the key journal: %w", err)
		}
		r.args = []any{key, id, fp, owner, agg, created, expires, instance, boot}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: read the key journal: %w", err)
	}
	return out, nil
}

// journalHead returns the seq of the journal's latest row; 0 when empty.
func (s *Store) journalHead(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.r.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM idempotency_journal`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("sqlite: read the key journal: %w", err)
	}
	return seq, nil
}

// dropJournal deletes the journal's rows up to seq through. Rows after it
// keep their seqs: an INTEGER PRIMARY KEY takes the largest plus one, and
// the row through stays until this delete.
func (s *Store) dropJournal(ctx context.Context, through int64) error {
	if s.isClosed() {
		return store.ErrClosed
	}
	if _, err := s.w.ExecContext(ctx, `DELETE FROM idempotency_journal WHERE seq <= ?`, through); err != nil {
		return fmt.Errorf("sqlite: drop the key journal: %w", s.fault("keys", true, err))
	}
	return nil
}
