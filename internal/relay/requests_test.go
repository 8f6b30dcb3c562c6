package relay_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/relay/kafkatest"
)

// TestRequestsFromAnotherInstance: the active relay serves the store's
// feed; replays and discards are asked of another Relay value on the same
// ledger (a standby instance), which never publishes itself: the active
// relay carries them out and the standby reports the outcome.
func TestRequestsFromAnotherInstance(t *testing.T) {
	r := newRig(t, kafka.ConfigEntry{ConfigName: "max.message.bytes", ConfigValue: "4096"})
	ctx := context.Background()
	r.serve(r.relay)
	standby := r.newRelay(&refusingPublisher{t: t})

	big, small, other := uuid.New(), uuid.New(), uuid.New()
	r.appendEvent(small, 10)
	r.appendEvent(big, 6000)
	r.appendEvent(small, 10)
	r.appendEvent(big, 10)
	r.appendEvent(other, 6000)
	r.appendEvent(other, 10)
	r.caughtUp()
	bigLetters, err := r.ledger.OfAggregate(ctx, big)
	if err != nil || len(bigLetters) != 2 {
		t.Fatalf("dead letters of big: %+v, %v", bigLetters, err)
	}

	// Still too large: the replay fails again; the letter keeps the new
	// error, one more attempt.
	n, err := standby.Replay(ctx, bigLetters[0].Position)
	if !errors.Is(err, relay.ErrReplayFailed) || n != 0 {
		t.Fatalf("replay under the same limit = %d, %v; want 0, ErrReplayFailed", n, err)
	}
	now, err := r.ledger.OfAggregate(ctx, big)
	if err != nil || len(now) != 2 || now[0].Attempts != 2 || now[0].State != relay.Failed || now[1].State != relay.Parked {
		t.Fatalf("after a failed replay: %+v, %v; want the letter at 2 attempts, the parked one kept", now, err)
	}
	if _, err := standby.Replay(ctx, 1<<40); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("replay of an unknown dead letter = %v, want ErrNotFound", err)
	}

	// Discarding a failed letter drops it and releases what was parked
	// behind it.
	mine, err := r.ledger.OfAggregate(ctx, other)
	if err != nil || len(mine) != 2 {
		t.Fatalf("dead letters of the second aggregate: %+v, %v", mine, err)
	}
	if n, err := standby.Discard(ctx, mine[0].Position); err != nil || n != 1 {
		t.Fatalf("discard = %d, %v; want the parked event published", n, err)
	}
	if left, _ := r.ledger.OfAggregate(ctx, other); len(left) != 0 {
		t.Fatalf("dead letters left after the discard: %+v", left)
	}

	// Once the limit is raised, a replay of any letter of the aggregate
	// publishes from its head, and the aggregate flows again.
	kafkatest.AlterTopic(t, r.brokers, r.topic, "max.message.bytes", "1048588")
	if n, err := standby.Replay(ctx, bigLetters[1].Position); err != nil || n != 2 {
		t.Fatalf("replay = %d, %v; want 2 published", n, err)
	}
	r.appendEvent(big, 10)
	r.caughtUp()
	msgs := r.consumeAll()
	var kept []kafka.Message
	for _, m := range msgs {
		if string(m.Key) != other.String() {
			kept = append(kept, m)
		} else if header(m, "ce_sequence") != "2" {
			t.Fatalf("the discarded event of %s was published", other)
		}
	}
	checkOrder(t, kept, map[uuid.UUID]int64{small: 2, big: 3})
	if left, _ := r.ledger.List(ctx, 0, 10); len(left) != 0 {
		t.Fatalf("dead letters left after the replay: %+v", left)
	}
	if n := gauge(t, r.reg, "orderd_relay_discarded_total", ""); n != 1 {
		t.Errorf("discarded_total = %v, want 1", n)
	}
}

// refusingPublisher fails the test if a relay that is not the active one
// publishes.
type refusingPublisher struct{ t *testing.T }

func (p *refusingPublisher) Publish(context.Context, []relay.Message) error {
	p.t.Error("a standby relay published")
	return errors.New("standby")
}

// TestRequestWaitsForAnActiveRelay: with no active relay a replay gives up
// after its 20 s with ErrBrokerUnavailable, and its request stays queued;
// the relay that becomes active carries it out, and the operator's
// retried call waits for that same request and reports its outcome.
func TestRequestWaitsForAnActiveRelay(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	big := uuid.New()
	e := r.appendEvent(big, 10)
	// Dead-letter it by hand, as a relay would have under a lower limit.
	if err := r.ledger.Record(context.Background(), []relay.DeadLetter{{Position: e.Position, EventID: e.ID,
		AggregateID: big, AggregateType: "Widget", Sequence: 1, EventType: e.Type, Topic: r.topic,
		State: relay.Failed, Error: "too large", Attempts: 1}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := r.relay.Replay(context.Background(), e.Position)
	if !errors.Is(err, relay.ErrBrokerUnavailable) || !strings.Contains(err.Error(), "stays queued") {
		t.Fatalf("replay with no active relay = %v; want ErrBrokerUnavailable, request queued", err)
	}
	if took := time.Since(start); took < 19*time.Second || took > 30*time.Second {
		t.Errorf("the replay gave up after %v, want 20s", took)
	}
	queued, err := r.ledger.Requests(context.Background())
	if err != nil || len(queued) != 1 || queued[0].Position != e.Position || queued[0].Op != relay.OpReplay {
		t.Fatalf("queued requests = %+v, %v; want the replay", queued, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	retried := make(chan error, 1)
	go func() {
		n, err := r.newRelay(r.kafka).Replay(ctx, e.Position) // the operator tries again elsewhere
		if err == nil && n != 1 {
			err = fmt.Errorf("%d published, want 1", n)
		}
		retried <- err
	}()
	r.serve(r.relay)
	if err := <-retried; err != nil {
		t.Fatalf("retried replay: %v", err)
	}
	checkOrder(t, r.consumeAll(), map[uuid.UUID]int64{big: 1})
	if q, err := r.ledger.RequestAt(ctx, e.Position); err != nil || q.ID != queued[0].ID || q.State != relay.RequestDone {
		t.Errorf("request after the replay = %+v, %v; want the first request, done", q, err)
	}
}

// TestRelayOff: without brokers, replays fail at once and Serve refuses.
func TestRelayOff(t *testing.T) {
	rl := relay.New(nil, nil, nil, relay.Config{}, zap.NewNop(), nil)
	start := time.Now()
	if _, err := rl.Replay(context.Background(), 1); !errors.Is(err, relay.ErrBrokerUnavailable) || time.Since(start) > time.Second {
		t.Errorf("Replay on a relay that is off = %v after %v; want ErrBrokerUnavailable at once", err, time.Since(start))
	}
	if err := rl.Serve(context.Background(), nil); !errors.Is(err, relay.ErrBrokerUnavailable) {
		t.Errorf("Serve on a relay that is off = %v", err)
	}
}

// TestRequestWakesOtherRelays: a request queued through one Relay (the
// admin API's) wakes the relays OnRequest names (those of the shards that
// serve in the process) at once, not at their next look in the ledger,
// an hour away here.
func TestRequestWakesOtherRelays(t *testing.T) {
	r := newRig(t, kafka.ConfigEntry{ConfigName: "max.message.bytes", ConfigValue: "4096"})
	ctx := context.Background()
	serving := relay.New(r.events, r.kafka, r.ledger, relay.Config{
		Topics:       relay.Topics{ByType: map[string]string{"Widget": r.topic}},
		RetryInitial: 10 * time.Millisecond, RetryMax: 200 * time.Millisecond,
		RequestPoll: time.Hour, RequestWait: 20 * time.Millisecond,
	}, zap.NewNop(), r.metrics)
	r.serve(serving)
	big := uuid.New()
	r.appendEvent(big, 6000)
	r.caughtUp()
	letters, err := r.ledger.OfAggregate(ctx, big)
	if err != nil || len(letters) != 1 {
		t.Fatalf("dead letters: %+v, %v; want the one too large", letters, err)
	}
	kafkatest.AlterTopic(t, r.brokers, r.topic, "max.message.bytes", "1048588")

	front := r.newRelay(&refusingPublisher{t: t})
	front.OnRequest(serving.Wake)
	if n, err := front.Replay(ctx, letters[0].Position); err != nil || n != 1 {
		t.Fatalf("replay through another relay = %d, %v; want 1 published by the serving relay, woken", n, err)
	}
}
