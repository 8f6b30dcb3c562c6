package cql

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	"github.com/scylladb/gocqlx/v3"
	"github.com/scylladb/gocqlx/v3/qb"

	"github.com/orderd/orderd/internal/store"
)

// mintCQL writes the version that Mint leaves an aggregate at. It is not
// the version cell: a plain write carries the writer's clock, and were
// that clock ahead of the coordinator of the next append, whose Paxos
// round stamps the version it writes with its own, the older version would
// win, and the partition's version would move back. minted is written
// once, by Mint, and never again, so no later write can meet it.
var mintCQL, _ = qb.Update("events").Set("minted").Where(qb.Eq("aggregate_id")).ToCql()

// Mint stores the first events of an aggregate that nobody else can name
// (see store.Store): a plain batch on its partition, the events and minted,
// its version, without the Paxos round that Append's check costs. The
// version cell stays null, so that a creation by Append (IF version = null
// AND minted = null) still finds the aggregate taken, and the first append
// after it checks minted instead (see append).
//
// The batch is the same on every try, timestamp included, so sending it
// again is harmless: after a try that timed out, it is sent again until
// one succeeds, for up to Config.Timeout. If none does, the outcome is
// unknown (store.ErrOutcomeUnknown), as an append's is when its settling
// read fails. A first try refused before it ran (no replicas, an
// overloaded node) fails at once, as an append does. Otherwise Mint is
// Append at version 0: the index of touched aggregates first, the hint
// and the hand-off after.
func (s *Store) Mint(ctx context.Context, aggregateID uuid.UUID, events []store.Event) error {
	err := s.appended(ctx, aggregateID, 0, events, s.mint(ctx, aggregateID, events))
	if err == nil {
		s.minted.put(aggregateID, int64(len(events)))
	}
	return err
}

func (s *Store) mint(ctx context.Context, id uuid.UUID, events []store.Event) error {
	rows, err := s.prepare(ctx, "mint", id, 0, events)
	if err != nil {
		return err
	}

	sent := time.Now()
	b := s.sess.ContextBatch(context.WithoutCancel(ctx), gocql.UnloggedBatch) // one partition: atomic as it is
	b.Query(mintCQL, int64(len(events)), id)
	for _, r := range rows {
		b.Query(insertCQL, r...)
	}
	b.WithTimestamp(sent.UnixMicro())
	b.RetryPolicy(noRetry{}) // the loop below retries, within its deadline

	var maybeApplied bool // by a try that was not answered
	for try := 0; ; try++ {
		err = s.sendMint(b, try)
		switch {
		case err == nil:
			return nil
		case s.closed.Load() || errors.Is(err, gocql.ErrSessionClosed):
			if maybeApplied || uncertain(err) {
				return fmt.Errorf("scylla: mint %s: %w: %w", id, store.ErrOutcomeUnknown, store.ErrClosed)
			}
			return fmt.Errorf("scylla: mint %s: %w", id, store.ErrClosed)
		case !maybeApplied && !uncertain(err):
			// Refused before anything was written (unavailable replicas,
			// an overloaded node): answered at once, as an append is.
			return fmt.Errorf("scylla: mint %s: %w", id, err) // Mint classifies
		}
		maybeApplied = true
		pause := time.Duration(try+1) * 50 * time.Millisecond
		if time.Since(sent)+pause > s.cfg.Timeout {
			break
		}
		time.Sleep(pause)
	}
	return fmt.Errorf("scylla: mint %s: %w: %w", id, store.ErrOutcomeUnknown, err)
}

// sendMint sends a mint's batch once: try is its number, from 0, for
// mintFault, which may fail it first.
func (s *Store) sendMint(b *gocqlx.Batch, try int) error {
	if s.mintFault != nil {
		if err := s.mintFault(try); err != nil {
			return err
		}
	}
	return s.sess.ExecuteBatch(b)
}

// versionIn returns an aggregate's version from its static cells: version,
// else minted (Mint's, before any append), else 0 (no aggregate).
func versionIn(version, minted *int64) int64 {
	switch {
	case version != nil:
		return *version
	case minted != nil:
		return *minted
	}
	return 0
}

// mintedMax bounds minted: when it is full, it starts again empty. An
// aggregate it forgot costs its first append after Mint a second round.
const mintedMax = 1 << 16

// mintedAt remembers the aggregates that Mint left without a version cell,
// with the version it left them at, so that the first append after it
// checks minted at once (see append): those this process minted, and
// those its Load and LoadPage found so.
type mintedAt struct {
	mu sync.Mutex
	at map[uuid.UUID]int64
}

func (m *mintedAt) put(id uuid.UUID, v int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.at == nil || len(m.at) >= mintedMax {
		m.at = make(map[uuid.UUID]int64)
	}
	m.at[id] = v
}

// take returns and forgets what m knows of id: the next append settles it.
func (m *mintedAt) take(id uuid.UUID) (int64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.at[id]
	if ok {
		delete(m.at, id)
	}
	return v, ok
}

// learn records what a read of id's events found of its static cells.
func (m *mintedAt) learn(id uuid.UUID, st statics) {
	switch {
	case !st.read: // no row: nothing after the version asked for
	case st.version == nil && st.minted != nil:
		m.put(id, *st.minted)
	default:
		m.take(id)
	}
}
