package cdc

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gocql/gocql"
	scyllacdc "github.com/scylladb/scylla-cdc-go"
	"go.uber.org/zap/zaptest"
)

// table stands for the library's progress table: it records the writes
// that reach it, and fails those of the streams in fail.
type table struct {
	scyllacdc.ProgressManagerWithStartTime // nil: the calls a test must not make panic

	mu     sync.Mutex
	writes []mark
	gens   []time.Time
	fail   map[string]bool
}

func (t *table) SaveProgress(_ context.Context, gen time.Time, tbl string, stream scyllacdc.StreamID, p scyllacdc.Progress) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fail[string(stream)] {
		return errors.New("write timeout")
	}
	t.writes = append(t.writes, mark{gen: gen, table: tbl, stream: stream, at: p.LastProcessedRecordTime})
	return nil
}

func (t *table) StartGeneration(_ context.Context, gen time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.gens = append(t.gens, gen)
	return nil
}

// saved returns the writes so far, by stream, and their number.
func (t *table) saved() (map[string]gocql.UUID, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]gocql.UUID{}
	for _, w := range t.writes {
		out[string(w.stream)] = w.at
	}
	return out, len(t.writes)
}

var gen0 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

func at(sec int) gocql.UUID { return gocql.MinTimeUUID(gen0.Add(time.Duration(sec) * time.Second)) }

func save(t *testing.T, s *saver, gen time.Time, stream string, sec int) {
	t.Helper()
	err := s.SaveProgress(context.Background(), gen, "ks.events", scyllacdc.StreamID(stream), scyllacdc.Progress{LastProcessedRecordTime: at(sec)})
	if err != nil {
		t.Fatalf("SaveProgress: %v", err)
	}
}

// TestSaverWritesOncePerStreamPerFlush: the reports of many polls cost no
// write; a flush writes each stream's latest mark once, and a stream that
// did not move since is not written again.
func TestSaverWritesOncePerStreamPerFlush(t *testing.T) {
	tbl := &table{}
	s := newSaver(tbl, 0)
	for sec := 1; sec <= 1000; sec++ {
		for _, stream := range []string{"a", "b", "c"} {
			save(t, s, gen0, stream, sec)
		}
	}
	save(t, s, gen0, "a", 7) // a late, older report: never moves a mark back
	if _, n := tbl.saved(); n != 0 {
		t.Fatalf("%d writes before any flush, want 0", n)
	}
	if err := s.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, n := tbl.saved()
	if n != 3 || got["a"] != at(1000) || got["b"] != at(1000) || got["c"] != at(1000) {
		t.Fatalf("after a flush: %d writes, %v; want 3, each stream at %v", n, got, at(1000))
	}
	save(t, s, gen0, "b", 1001)
	if err := s.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, n := tbl.saved(); n != 4 || got["b"] != at(1001) {
		t.Fatalf("second flush: %d writes in all, b at %v; want 4, b at %v", n, got["b"], at(1001))
	}
}

// TestSaverRetriesFailedWrites: a mark whose write failed is written by
// the next flush, or replaced by a later one of its stream.
func TestSaverRetriesFailedWrites(t *testing.T) {
	tbl := &table{fail: map[string]bool{"a": true, "b": true}}
	s := newSaver(tbl, 0)
	save(t, s, gen0, "a", 1)
	save(t, s, gen0, "b", 1)
	save(t, s, gen0, "c", 1)
	if err := s.flush(context.Background()); err == nil {
		t.Fatal("flush with failing writes returned nil")
	}
	save(t, s, gen0, "b", 2) // came while b's write was failing
	tbl.mu.Lock()
	tbl.fail = nil
	tbl.mu.Unlock()
	if err := s.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, n := tbl.saved()
	if n != 3 || got["a"] != at(1) || got["b"] != at(2) || got["c"] != at(1) {
		t.Fatalf("after the retry: %d writes, %v; want a at 1s, b at 2s, c at 1s, 3 writes", n, got)
	}
}

// TestSaverForgetsEndedGenerations: once the library starts a generation,
// the marks of older ones are not written (nothing reads them again), and
// the generation itself is saved at once.
func TestSaverForgetsEndedGenerations(t *testing.T) {
	tbl := &table{}
	s := newSaver(tbl, 0)
	gen1 := gen0.Add(time.Hour)
	save(t, s, gen0, "old", 1)
	save(t, s, gen1, "new", 3601)
	if err := s.StartGeneration(context.Background(), gen1); err != nil {
		t.Fatal(err)
	}
	if len(tbl.gens) != 1 || !tbl.gens[0].Equal(gen1) {
		t.Fatalf("generations saved: %v, want [%v]", tbl.gens, gen1)
	}
	if err := s.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, n := tbl.saved(); n != 1 || got["new"] != at(3601) {
		t.Fatalf("after moving to the next generation: %d writes, %v; want only the new stream's", n, got)
	}
}

// TestSaverRunFlushesPeriodically: run writes pending marks every period,
// without a caller asking.
func TestSaverRunFlushesPeriodically(t *testing.T) {
	tbl := &table{}
	s := newSaver(tbl, 0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.run(ctx, 10*time.Millisecond, zaptest.NewLogger(t))
	}()
	t.Cleanup(func() { cancel(); <-done })

	save(t, s, gen0, "a", 5)
	deadline := time.Now().Add(10 * time.Second) // a guard, far above the period
	for {
		if got, _ := tbl.saved(); got["a"] == at(5) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("run did not write the pending mark within 10s at a 10ms period")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAdvanced: what the reader asks of the library. A backlog of MaxAge
// fits one query window, so catching up is one query per group of streams,
// and the delays and window are the configured ones, never the library's
// defaults (a 30 s window, 10-30 s delays).
func TestAdvanced(t *testing.T) {
	for _, c := range []Config{{}, {MaxAge: 90 * 24 * time.Hour, Window: time.Second, PollDelay: time.Millisecond, IdleDelay: 2 * time.Second}} {
		c.defaults()
		a := c.advanced()
		if a.QueryTimeWindowSize < c.MaxAge {
			t.Errorf("MaxAge %v: query window %v, want at least MaxAge", c.MaxAge, a.QueryTimeWindowSize)
		}
		if a.ConfidenceWindowSize != c.Window || a.PostNonEmptyQueryDelay != c.PollDelay ||
			a.PostEmptyQueryDelay != c.IdleDelay || a.ChangeAgeLimit != c.MaxAge {
			t.Errorf("config %+v gave %+v", c, a)
		}
	}
	var c Config
	c.defaults()
	if c.Window != 500*time.Millisecond || c.IdleDelay != 750*time.Millisecond || c.PollDelay != 250*time.Millisecond ||
		c.SaveEvery != 10*time.Second || c.MaxAge != 7*24*time.Hour || c.Table != "events" {
		t.Errorf("defaults: %+v", c)
	}
}
