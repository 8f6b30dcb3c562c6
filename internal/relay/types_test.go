package relay_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/store"
)

// TestRelaySkipsUnpublishedTypes: with Config.Types, events of other
// aggregate types are acknowledged with their batch, never published nor
// dead-lettered, and the feed moves past them.
func TestRelaySkipsUnpublishedTypes(t *testing.T) {
	r := newRig(t)
	rl := relay.New(r.events, r.kafka, r.ledger, relay.Config{
		// Both types map to the rig's topic, so a published secret would show.
		Topics:       relay.Topics{ByType: map[string]string{"Widget": r.topic, "Secret": r.topic}},
		Types:        []string{"Widget"},
		RetryInitial: 10 * time.Millisecond, RetryMax: 200 * time.Millisecond,
	}, zap.NewNop(), r.metrics)

	widget, secret := uuid.New(), uuid.New()
	batch := []store.Event{r.appendEvent(widget, 10), r.appendTyped(secret, "Secret"), r.appendEvent(widget, 10), r.appendTyped(secret, "Secret")}
	r.handle(rl, batch...)

	msgs := r.consumeAll()
	if len(msgs) != 2 {
		t.Fatalf("%d records, want the 2 widget events", len(msgs))
	}
	for _, m := range msgs {
		if string(m.Key) != widget.String() || header(m, "ce_aggregatetype") != "Widget" {
			t.Errorf("published %s of %s", m.Key, header(m, "ce_aggregatetype"))
		}
	}
	letters, err := r.ledger.List(context.Background(), 0, 100)
	if err != nil || len(letters) != 0 {
		t.Errorf("dead letters %v, %v; want none", letters, err)
	}

	stop := r.serve(rl)
	r.caughtUp()
	stop()
}

// appendTyped appends the next event of aggregate id, of aggregateType.
func (r *rig) appendTyped(id uuid.UUID, aggregateType string) store.Event {
	r.t.Helper()
	r.seq[id]++
	e := store.Event{
		ID: uuid.Must(uuid.NewV7()), AggregateID: id, AggregateType: aggregateType, Sequence: r.seq[id],
		Type: aggregateType + "Changed", SchemaVersion: 1, Data: []byte(`{}`), CausationID: uuid.New(), CorrelationID: uuid.New(),
		Timestamp: time.Now().UTC(),
	}
	ctx := context.Background()
	if err := r.events.Append(ctx, id, r.seq[id]-1, []store.Event{e}); err != nil {
		r.t.Fatal(err)
	}
	stored, err := r.events.Load(ctx, id, r.seq[id]-1)
	if err != nil || len(stored) != 1 {
		r.t.Fatalf("load back %s/%d: %v, %v", id, r.seq[id], stored, err)
	}
	return stored[0]
}
