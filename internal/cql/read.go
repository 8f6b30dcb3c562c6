package cql

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	"github.com/scylladb/gocqlx/v3/qb"

	"github.com/orderd/orderd/internal/store"
)

// loadCQL selects the events of one aggregate after a sequence. The
// restriction on the clustering column also keeps out the partition's
// static-only row, should one exist.
var loadCQL, _ = qb.Select("events").Columns(columns...).
	Where(qb.Eq("aggregate_id"), qb.Gt("sequence")).ToCql()

// withStatics are columns and then the partition's two static cells, which
// tell Append whether Mint left the aggregate where it is (see minted):
// Load and LoadPage, which commands read before they append, select them.
var withStatics = append(append([]string(nil), columns...), "version", "minted")

// loadStaticsCQL is loadCQL selecting withStatics.
var loadStaticsCQL, _ = qb.Select("events").Columns(withStatics...).
	Where(qb.Eq("aggregate_id"), qb.Gt("sequence")).ToCql()

// statics are the static cells of a partition as a read found them.
type statics struct {
	version, minted *int64
	read            bool // a row came back
}

// Load returns the aggregate's events with a sequence above after, in
// sequence order, upcast. An unknown aggregate yields no events and no
// error. It returns store.ErrClosed after Close. The events carry no
// Position: this backend has no global commit order.
//
// It reads at Config.Consistency (LOCAL_QUORUM by default), which sees
// every append that returned nil, since those committed at that level.
func (s *Store) Load(ctx context.Context, aggregateID uuid.UUID, after int64) ([]store.Event, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	var st statics
	evs, err := s.loadWith(ctx, loadStaticsCQL, aggregateID, after, &st)
	if err != nil {
		return nil, fmt.Errorf("scylla: load %s: %w", aggregateID, s.closedOr(ctx, err))
	}
	s.minted.learn(aggregateID, st)
	return evs, nil
}

// loadPageCQL is loadCQL with a LIMIT: the coordinator reads that many
// clustering rows of the partition and no more.
var loadPageCQL, _ = qb.Select("events").Columns(withStatics...).
	Where(qb.Eq("aggregate_id"), qb.Gt("sequence")).LimitNamed("limit").ToCql()

// LoadPage returns at most limit of the aggregate's events with a sequence
// above after, in sequence order, upcast, reading only those rows. It
// reads at Config.Consistency, as Load does, and returns store.ErrClosed
// after Close.
func (s *Store) LoadPage(ctx context.Context, aggregateID uuid.UUID, after int64, limit int) ([]store.Event, error) {
	if limit < 1 {
		return nil, fmt.Errorf("scylla: load page of %s: limit %d, want > 0", aggregateID, limit)
	}
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	iter := s.sess.Session.Query(loadPageCQL, aggregateID, after, limit).WithContext(ctx).Idempotent(true).Iter()
	evs := make([]store.Event, 0, min(limit, 1000))
	var st statics
	err := s.scanEvents(iter, &st, func(e store.Event) error {
		evs = append(evs, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scylla: load page of %s after %d: %w", aggregateID, after, s.closedOr(ctx, err))
	}
	s.minted.learn(aggregateID, st)
	return evs, nil
}

// versionCQL reads the partition's last clustering row, whatever the
// history's length. A static-only row (version written by hand, no event)
// comes back with a null sequence, read as 0.
var versionCQL, _ = qb.Select("events").Columns("aggregate_type", "sequence").
	Where(qb.Eq("aggregate_id")).OrderBy("sequence", qb.DESC).Limit(1).ToCql()

// Version returns the type and the sequence of the aggregate's last event,
// "" and 0 for an unknown aggregate. It reads at Config.Consistency, as
// Load does, and returns store.ErrClosed after Close.
func (s *Store) Version(ctx context.Context, aggregateID uuid.UUID) (string, int64, error) {
	if s.closed.Load() {
		return "", 0, store.ErrClosed
	}
	var (
		aggType string
		seq     int64
	)
	err := s.sess.Session.Query(versionCQL, aggregateID).WithContext(ctx).Idempotent(true).Scan(&aggType, &seq)
	switch {
	case errors.Is(err, gocql.ErrNotFound):
		return "", 0, nil
	case err != nil:
		return "", 0, fmt.Errorf("scylla: version of %s: %w", aggregateID, s.closedOr(ctx, err))
	case seq == 0:
		return "", 0, nil // a static-only row: no event
	}
	return aggType, seq, nil
}

// load reads the events of id after a sequence, for the feed.
func (s *Store) load(ctx context.Context, id uuid.UUID, after int64) ([]store.Event, error) {
	return s.loadWith(ctx, loadCQL, id, after, nil)
}

// loadWith reads the events of id after a sequence with query, loadCQL or
// loadStaticsCQL (then st gets the static cells).
func (s *Store) loadWith(ctx context.Context, query string, id uuid.UUID, after int64, st *statics) ([]store.Event, error) {
	// The driver pages through a long stream on its own (5000 rows a page).
	iter := s.sess.Session.Query(query, id, after).WithContext(ctx).Idempotent(true).Iter()
	var evs []store.Event
	err := s.scanEvents(iter, st, func(e store.Event) error {
		evs = append(evs, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return evs, nil
}

// scanEvents decodes the rows of iter, which selects columns (withStatics
// when st is not nil, which then gets the static cells), into events,
// upcast, and passes each to yield in the order of the rows. It skips a
// static-only row (version written by hand, no event). It closes iter and
// returns yield's error, an upcaster's, or the driver's.
func (s *Store) scanEvents(iter *gocql.Iter, st *statics, yield func(store.Event) error) error {
	var (
		data string
		ms   int64
		meta map[string]string
	)
	for {
		var e store.Event
		meta = nil // Scan leaves a null map as it was
		dest := append(make([]any, 0, len(withStatics)), &e.AggregateID, &e.Sequence, &e.ID, &e.AggregateType,
			&e.Type, &e.SchemaVersion, &data, &e.CausationID, &e.CorrelationID, &ms, &meta) // room for st's
		if st != nil {
			dest = append(dest, &st.version, &st.minted)
		}
		if !iter.Scan(dest...) {
			break
		}
		if st != nil {
			st.read = true
		}
		if e.ID == uuid.Nil {
			continue // a static-only row, written by hand: no event
		}
		e.Data = []byte(data)
		e.Timestamp = time.UnixMilli(ms).UTC()
		e.Metadata = meta
		var err error
		if s.up != nil {
			e, err = s.up.Upcast(e)
		}
		if err == nil {
			err = yield(e)
		}
		if err != nil {
			_ = iter.Close() // the upcast's or yield's error is the one to report
			return err
		}
	}
	return iter.Close()
}
