package cql

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// TestProgressEpoch: a fenced subscription saves, beside each aggregate's
// progress, the epoch of the holder that saved it, which is how a test or
// an operator tells which holder moved a consumer's progress; a save under
// a lapsed epoch leaves the row as it was.
func TestProgressEpoch(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	const consumer = "epochs"
	epoch, err := e.store.Acquire(ctx, consumer, "a", time.Minute)
	if err != nil || epoch != 1 {
		t.Fatalf("Acquire = %d, %v; want epoch 1", epoch, err)
	}
	id := uuid.Must(uuid.NewV7())
	appendOne := func(seq int64) {
		t.Helper()
		ev := store.Event{ID: uuid.Must(uuid.NewV7()), AggregateID: id, AggregateType: "Widget", Sequence: seq,
			Type: "WidgetTurned", SchemaVersion: 1, Data: json.RawMessage(`{}`), CausationID: uuid.New(),
			CorrelationID: uuid.New(), Timestamp: time.Now().UTC()}
		if err := e.store.Append(ctx, id, seq-1, []store.Event{ev}); err != nil {
			t.Fatal(err)
		}
	}
	// run subscribes under fence until it was handed event seq of id, or
	// the subscription ended, and returns how it ended.
	run := func(f store.Fence, seq int64) error {
		sctx, stop := context.WithCancel(store.WithFence(ctx, f))
		defer stop()
		seen := make(chan struct{}, 1)
		done := make(chan error, 1)
		go func() {
			done <- e.store.Subscribe(sctx, consumer, func(_ context.Context, evs []store.Event) error {
				for _, ev := range evs {
					if ev.AggregateID == id && ev.Sequence == seq {
						select {
						case seen <- struct{}{}:
						default:
						}
					}
				}
				return nil
			})
		}()
		select {
		case <-seen:
		case err := <-done:
			return err
		}
		stop()
		return <-done
	}
	saved := func() (version, epoch int64) {
		t.Helper()
		var ep *int64
		if err := e.store.sess.Session.Query(`SELECT version, epoch FROM feed_progress WHERE aggregate_id = ? AND consumer = ?`,
			id, consumer).WithContext(ctx).Scan(&version, &ep); err != nil {
			t.Fatalf("read progress: %v", err)
		}
		if ep != nil {
			epoch = *ep
		}
		return version, epoch
	}

	appendOne(1)
	if err := run(store.Fence{Lease: consumer, Epoch: 1}, 1); err != nil {
		t.Fatalf("Subscribe under epoch 1: %v", err)
	}
	if v, ep := saved(); v != 1 || ep != 1 {
		t.Fatalf("progress = version %d by epoch %d; want 1 by 1", v, ep)
	}

	// b takes the lease; a's next save is refused and moves nothing.
	if err := e.store.Release(ctx, consumer, "a"); err != nil {
		t.Fatal(err)
	}
	if epoch, err := e.store.Acquire(ctx, consumer, "b", time.Minute); err != nil || epoch != 2 {
		t.Fatalf("Acquire(b) = %d, %v; want epoch 2", epoch, err)
	}
	appendOne(2)
	if err := run(store.Fence{Lease: consumer, Epoch: 1}, 2); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("Subscribe under the lapsed epoch 1 = %v, want store.ErrFenced", err)
	}
	if v, ep := saved(); v != 1 || ep != 1 {
		t.Fatalf("progress after the lapsed holder's batch = version %d by epoch %d; want it unmoved (1 by 1)", v, ep)
	}
	if err := run(store.Fence{Lease: consumer, Epoch: 2}, 2); err != nil {
		t.Fatalf("Subscribe under epoch 2: %v", err)
	}
	if v, ep := saved(); v != 2 || ep != 2 {
		t.Fatalf("progress = version %d by epoch %d; want 2 by 2", v, ep)
	}
}

// BenchmarkFenceCheck measures the fence check of one batch: one
// lightweight transaction on the lease's row.
func BenchmarkFenceCheck(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	epoch, err := e.store.Acquire(ctx, "bench", "a", time.Minute)
	if err != nil || epoch == 0 {
		b.Fatalf("Acquire = %d, %v", epoch, err)
	}
	fctx := store.WithFence(ctx, store.Fence{Lease: "bench", Epoch: epoch})
	b.ResetTimer()
	for b.Loop() {
		if err := checkFence(fctx, e.store.sess.Session, e.store.cfg.Consistency, "bench"); err != nil {
			b.Fatal(err)
		}
	}
}
