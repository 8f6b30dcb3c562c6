package cdc

import (
	"context"
	"testing"
	"time"

	"github.com/gocql/gocql"
	scyllacdc "github.com/scylladb/scylla-cdc-go"
)

// marks records a consumer's marks.
type marks struct{ at []gocql.UUID }

func (m *marks) mark(_ context.Context, at gocql.UUID) error {
	m.at = append(m.at, at)
	return nil
}

func (m *marks) last() gocql.UUID {
	if len(m.at) == 0 {
		return gocql.UUID{}
	}
	return m.at[len(m.at)-1]
}

// TestConsumerMarksOnlyHandledChanges: a stream's progress moves past a
// change only once the feed acknowledged it, and past a later point only
// once every change before it is acknowledged; an empty window after a
// pending change waits for it too.
func TestConsumerMarksOnlyHandledChanges(t *testing.T) {
	acks := []chan struct{}{make(chan struct{}), make(chan struct{})}
	next := 0
	r := New(Config{}, nil)
	m := &marks{}
	c := &consumer{r: r, mark: m.mark}
	ctx := context.Background()

	c.pending = append(c.pending, pending{at: at(1), ack: acks[next]})
	next++
	if err := c.release(ctx); err != nil || len(m.at) != 0 {
		t.Fatalf("a change not handled was marked: %v, %v", m.at, err)
	}
	c.pending = append(c.pending, pending{at: at(2), ack: acks[next]})
	if err := c.Empty(ctx, at(3)); err != nil || len(m.at) != 0 {
		t.Fatalf("an empty window after pending changes was marked: %v, %v", m.at, err)
	}
	close(acks[1]) // the later change first: still nothing
	if err := c.release(ctx); err != nil || len(m.at) != 0 {
		t.Fatalf("marked past a change not handled: %v, %v", m.at, err)
	}
	close(acks[0])
	if err := c.release(ctx); err != nil || m.last() != at(3) {
		t.Fatalf("after both were handled: marks %v, %v; want up to the empty window at %v", m.at, err, at(3))
	}
	if len(c.pending) != 0 {
		t.Errorf("%d points still pending", len(c.pending))
	}
}

// TestConsumerEndWaitsForPending: at a generation's end the consumer waits
// for the changes in the feed's hands and marks them.
func TestConsumerEndWaitsForPending(t *testing.T) {
	ack := make(chan struct{})
	m := &marks{}
	c := &consumer{r: New(Config{}, nil), mark: m.mark, pending: []pending{{at: at(5), ack: ack}}}
	time.AfterFunc(50*time.Millisecond, func() { close(ack) })
	if err := c.End(); err != nil {
		t.Fatal(err)
	}
	if m.last() != at(5) {
		t.Errorf("marks %v after End, want %v", m.at, at(5))
	}
}

// TestSaverKeepsTheMargin: what a flush writes is the margin before the
// stream's mark, so that a restart reads that much log again.
func TestSaverKeepsTheMargin(t *testing.T) {
	tbl := &table{}
	s := newSaver(tbl, 16*time.Second)
	if err := s.SaveProgress(context.Background(), gen0, "ks.events", scyllacdc.StreamID("a"),
		scyllacdc.Progress{LastProcessedRecordTime: at(100)}); err != nil {
		t.Fatal(err)
	}
	if err := s.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, _ := tbl.saved()
	if want := at(84); got["a"] != want {
		t.Errorf("saved %v (%v), want %v: 16 s before the mark", got["a"], got["a"].Time(), want.Time())
	}
}
