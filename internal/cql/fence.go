package cql

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/gocql/gocql"

	"github.com/orderd/orderd/internal/store"
)

// leaseSerial is the serial consistency of the leases and of every fence:
// SERIAL, whatever Config.SerialConsistency says. A lease elects one
// holder in the whole cluster; at LOCAL_SERIAL each datacenter would elect
// its own, and two relays would publish side by side, each fenced only
// against its own datacenter's predecessors. On one datacenter SERIAL
// costs what LOCAL_SERIAL does. (docs/cluster.md, "Cluster set-ups".)
const leaseSerial = gocql.Serial

// The fence check of a batch of plain writes (progress, read-model rows,
// read-model tables): one lightweight transaction on the lease's row that
// writes the epoch it finds, applied only when that is the writer's. It is
// linearised with every take (which bumps the epoch in the same row), so
// once a successor has taken the lease no check of an earlier holder
// passes. What follows a passed check is not atomic with it; the writes it
// guards are version-guarded or monotonic, so that what a holder whose
// lease lapsed between its check and its writes can still write only
// states facts (docs/architecture.md, "Fencing").
const fenceCheckCQL = `UPDATE leases SET epoch = ? WHERE name = ? IF epoch = ?`

// checkFence passes when ctx carries no fence, or one whose epoch is the
// lease's current one; it returns an error wrapping store.ErrFenced when
// another holder took the lease since, and another error when Cassandra
// fails (then the writes must not go ahead either). Within one delivered
// batch (withBatchCheck) only the first check runs a round; the later ones
// pass on its success.
func checkFence(ctx context.Context, sess *gocql.Session, cons gocql.Consistency, what string) error {
	f, ok := store.FenceOf(ctx)
	if !ok {
		return nil
	}
	bc, _ := ctx.Value(batchCheckKey{}).(*batchCheck)
	if bc != nil && bc.passed.Load() {
		return nil
	}
	if err := runFenceCheck(ctx, sess, cons, f, what); err != nil {
		return err
	}
	if bc != nil {
		bc.passed.Store(true)
	}
	return nil
}

// A batchCheck is the fence check of one batch the feed delivers: the
// handler's writes (the projector's rows) and then the progress save. Both
// follow the batch's one check, as every fenced plain write follows a
// check it is not atomic with; the save only states what the handler did,
// and never moves progress back (USING TIMESTAMP of the version). So the
// projector pays one Paxos round per batch instead of two, and a holder
// whose check failed writes nothing of the batch.
type batchCheck struct{ passed atomic.Bool }

type batchCheckKey struct{}

// withBatchCheck returns ctx whose fence checks share one round: the
// context of one delivered batch.
func withBatchCheck(ctx context.Context) context.Context {
	return context.WithValue(ctx, batchCheckKey{}, &batchCheck{})
}

// runFenceCheck runs the fence check's lightweight transaction.
func runFenceCheck(ctx context.Context, sess *gocql.Session, cons gocql.Consistency, f store.Fence, what string) error {
	current := map[string]any{}
	applied, err := sess.Query(fenceCheckCQL, f.Epoch, f.Lease, f.Epoch).WithContext(ctx).
		Consistency(cons).SerialConsistency(leaseSerial).Idempotent(true).MapScanCAS(current)
	if err != nil {
		return fmt.Errorf("%s: check fence %s: %w", what, f, err)
	}
	if !applied {
		cur, _ := current["epoch"].(int64)
		return store.Fenced(what, f, cur)
	}
	return nil
}

// nullable binds 0 as null: an epoch or a generation that was never written.
func nullable(n int64) any {
	if n == 0 {
		return nil
	}
	return n
}

// casBatch runs a conditional batch and returns whether it applied and,
// when it did not, the first row of the values its conditions saw.
func casBatch(sess *gocql.Session, b *gocql.Batch) (bool, map[string]any, error) {
	current := map[string]any{}
	applied, iter, err := sess.MapExecuteBatchCAS(b, current)
	if iter != nil {
		if cerr := iter.Close(); err == nil {
			err = cerr
		}
	}
	return applied, current, err
}
