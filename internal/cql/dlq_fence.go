package cql

import (
	"context"
	"errors"
	"fmt"

	"github.com/gocql/gocql"

	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/store"
)

// The fence of the ledger (store.Fence): a static epoch in each shard's
// partition of relay_dead_letters (dlq_shards.go), the fence's shard's
// for a write under it. A new holder of a shard's relay lease
// stamps its epoch there, never backwards (claim, from Blocked), and every
// fenced write of letters is one conditional batch on the partition, IF
// epoch = the writer's: Paxos orders it with the stamp, so a write of an
// earlier holder either committed before the stamp (and the new holder's
// read after the stamp sees it) or is refused. A batch holds at most
// letterBatch letters, to stay under the servers' batch size limits.
const (
	ledgerEpochCQL = `SELECT epoch FROM relay_dead_letters WHERE consumer = ? LIMIT 1`
	ledgerStampCQL = `UPDATE relay_dead_letters SET epoch = ? WHERE consumer = ? IF epoch = ?`
	letterBatch    = 50
	// letterInsertCQL is recordCQL without its condition, for a fenced batch.
	letterInsertCQL = `INSERT INTO relay_dead_letters (consumer, ` + letterColumns + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	updatePlainCQL = `UPDATE relay_dead_letters SET state = ?, error = ?, attempts = ?, last_failed_at = ?
		WHERE consumer = ? AND position = ?`
	deletePlainCQL = `DELETE FROM relay_dead_letters WHERE consumer = ? AND position = ?`
)

// claim stamps f's epoch into partition p (the fence's shard's) unless it
// is there already; it returns an error wrapping store.ErrFenced when a
// later epoch is there.
func (l *Ledger) claim(ctx context.Context, f store.Fence, p string) error {
	var cur *int64
	err := l.query(ctx, ledgerEpochCQL, p).Consistency(leaseSerial).Scan(&cur)
	if err != nil && !errors.Is(err, gocql.ErrNotFound) {
		return fmt.Errorf("read the ledger's epoch: %w", err)
	}
	for {
		var c int64
		if cur != nil {
			c = *cur
		}
		switch {
		case c > f.Epoch:
			return store.Fenced("claim the dead letters", f, c)
		case c == f.Epoch:
			return nil
		}
		current := map[string]any{}
		applied, err := l.lwt(ctx, current, ledgerStampCQL, f.Epoch, p, nullable(c))
		if err != nil {
			return fmt.Errorf("stamp the ledger's epoch: %w", err)
		}
		if applied {
			return nil
		}
		// Another stamp came in between: look again at what it wrote.
		e, ok := current["epoch"].(int64)
		if !ok {
			cur = nil
			continue
		}
		cur = &e
	}
}

// fencedBatch runs stmts (with their args, each on partition p) as
// conditional batches on p, the fence's shard's partition, IF epoch =
// f.Epoch, at most letterBatch statements each; it returns an error
// wrapping store.ErrFenced, having stored nothing of the refused batch,
// when the epoch is not f's.
func (l *Ledger) fencedBatch(ctx context.Context, f store.Fence, p, what string, stmts []string, args [][]any) error {
	for lo := 0; lo == 0 || lo < len(stmts); lo += letterBatch { // once at least: a check

		hi := min(lo+letterBatch, len(stmts))
		b := l.sess.Session.Batch(gocql.LoggedBatch).WithContext(ctx).SerialConsistency(leaseSerial)
		b.SetConsistency(l.cons)
		b.Query(ledgerStampCQL, f.Epoch, p, f.Epoch)
		for i := lo; i < hi; i++ {
			b.Query(stmts[i], args[i]...)
		}
		applied, current, err := casBatch(l.sess.Session, b)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if !applied {
			cur, _ := current["epoch"].(int64)
			return store.Fenced(what, f, cur)
		}
	}
	return nil
}

// recordFenced stores the letters that are not recorded yet, in fenced
// batches on the fence's shard's partition; a letter of another shard's
// aggregate is refused (a whole relay's partition takes any). Reading first which are is safe under the fence:
// only the holder of the epoch writes letters.
func (l *Ledger) recordFenced(ctx context.Context, f store.Fence, letters []relay.DeadLetter) error {
	p, err := l.fencePartition(f)
	if err != nil {
		return fmt.Errorf("scylla: ledger: record: %w", err)
	}
	var (
		stmts []string
		args  [][]any
	)
	for _, d := range letters {
		if lp := l.letterPartition(d.AggregateID); lp != p && p != consumer {
			return fmt.Errorf("scylla: ledger: record letter %d: its aggregate %s is in %s, not in the fence's %s",
				d.Position, d.AggregateID, lp, p)
		}
		have, err := l.scan(ctx, getCQL, p, d.Position)
		if err != nil {
			return fmt.Errorf("scylla: ledger: record letter %d: %w", d.Position, err)
		}
		if len(have) > 0 {
			continue
		}
		stmts = append(stmts, letterInsertCQL)
		args = append(args, []any{p, d.Position, gocqlUUID(d.EventID), gocqlUUID(d.AggregateID),
			d.AggregateType, d.Sequence, d.EventType, d.Topic, d.State, d.Error, d.Attempts,
			d.FirstFailedAt, d.LastFailedAt})
	}
	if err := l.fencedBatch(ctx, f, p, "record dead letters", stmts, args); err != nil {
		return fmt.Errorf("scylla: ledger: %w", err)
	}
	return nil
}

// updateFenced stores d's state in a fenced batch, after checking that the
// letter exists.
func (l *Ledger) updateFenced(ctx context.Context, f store.Fence, d relay.DeadLetter) error {
	p, err := l.fencePartition(f)
	if err != nil {
		return fmt.Errorf("scylla: ledger: update %d: %w", d.Position, err)
	}
	have, err := l.scan(ctx, getCQL, p, d.Position)
	if err != nil {
		return fmt.Errorf("scylla: ledger: update %d: %w", d.Position, err)
	}
	if len(have) == 0 {
		return fmt.Errorf("scylla: ledger: update %d: %w", d.Position, relay.ErrNotFound)
	}
	err = l.fencedBatch(ctx, f, p, "update a dead letter", []string{updatePlainCQL},
		[][]any{{d.State, d.Error, d.Attempts, d.LastFailedAt, p, d.Position}})
	if err != nil {
		return fmt.Errorf("scylla: ledger: %w", err)
	}
	return nil
}

// removeFenced deletes the letters at positions in the fence's shard's
// partition, in fenced batches.
func (l *Ledger) removeFenced(ctx context.Context, f store.Fence, positions []int64) error {
	p, err := l.fencePartition(f)
	if err != nil {
		return fmt.Errorf("scylla: ledger: remove: %w", err)
	}
	stmts := make([]string, len(positions))
	args := make([][]any, len(positions))
	for i, pos := range positions {
		stmts[i], args[i] = deletePlainCQL, []any{p, pos}
	}
	if err := l.fencedBatch(ctx, f, p, "remove dead letters", stmts, args); err != nil {
		return fmt.Errorf("scylla: ledger: %w", err)
	}
	return nil
}

// checkFence passes when ctx carries no fence, or one whose epoch is its
// shard's ledger's: one lightweight transaction on the partition's epoch.
// It fences Finish, whose request rows are in another table: a check
// before the write, not atomic with it.
func (l *Ledger) checkFence(ctx context.Context, what string) error {
	f, ok := store.FenceOf(ctx)
	if !ok {
		return nil
	}
	p, err := l.fencePartition(f)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return l.fencedBatch(ctx, f, p, what, nil, nil)
}
