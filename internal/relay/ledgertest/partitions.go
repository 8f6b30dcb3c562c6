package ledgertest

import (
	"context"
	"testing"

	"github.com/orderd/orderd/internal/relay"
)

// recordPartitions records n for topic and checks that the ledger answers
// want.
func recordPartitions(t *testing.T, l relay.Ledger, topic string, n, want int) {
	t.Helper()
	got, err := l.RecordPartitions(context.Background(), topic, n)
	if err != nil {
		t.Fatalf("RecordPartitions(%s, %d): %v", topic, n, err)
	}
	if got != want {
		t.Errorf("RecordPartitions(%s, %d) = %d, want %d", topic, n, got, want)
	}
}

// testRecordPartitions: the first count recorded for a topic stays; later
// calls with another count get it back, and topics are independent.
func testRecordPartitions(t *testing.T, l relay.Ledger) {
	recordPartitions(t, l, "orders", 3, 3)
	recordPartitions(t, l, "orders", 6, 3) // a changed topic: the record wins
	recordPartitions(t, l, "orders", 3, 3)
	recordPartitions(t, l, "customers", 12, 12)
	recordPartitions(t, l, "orders", 1, 3)
	for _, n := range []int{0, -1} {
		if _, err := l.RecordPartitions(context.Background(), "other", n); err == nil {
			t.Errorf("RecordPartitions(other, %d) succeeded", n)
		}
	}
	recordPartitions(t, l, "other", 2, 2) // the refused calls recorded nothing
}

// testReplacePartitions: a replaced count is what RecordPartitions answers
// from then on, for that topic only; replacing an unrecorded topic records
// it.
func testReplacePartitions(t *testing.T, l relay.Ledger) {
	ctx := context.Background()
	recordPartitions(t, l, "orders", 3, 3)
	recordPartitions(t, l, "customers", 3, 3)
	if err := l.ReplacePartitions(ctx, "orders", 6); err != nil {
		t.Fatal(err)
	}
	recordPartitions(t, l, "orders", 3, 6)
	recordPartitions(t, l, "customers", 6, 3)
	if err := l.ReplacePartitions(ctx, "fresh", 4); err != nil {
		t.Fatal(err)
	}
	recordPartitions(t, l, "fresh", 5, 4)
	if err := l.ReplacePartitions(ctx, "orders", 0); err == nil {
		t.Error("ReplacePartitions(orders, 0) succeeded")
	}
	recordPartitions(t, l, "orders", 1, 6)
}
