package sqlite

import (
	"context"
	"database/sql"

	"github.com/orderd/orderd/internal/store"
)

// keyWrite is one write of the key store: run does it inside the batch's
// transaction, and an error from it spoils the whole batch (a request's
// own outcome, such as a key held by another attempt, is not an error of
// run but a result it leaves in its closure).
type keyWrite struct {
	run  func(tx *sql.Tx) error
	done chan error
}

// maxKeyBatch bounds the writes of one transaction.
const maxKeyBatch = 256

// write has run done in the next batch and returns once that batch
// committed (nil) or failed (its error, the same for every write of the
// batch), or store.ErrClosed after Close.
func (k *Keys) write(run func(tx *sql.Tx) error) error {
	w := keyWrite{run: run, done: make(chan error, 1)}
	select {
	case k.writes <- w:
	case <-k.stop:
		return store.ErrClosed
	}
	return <-w.done
}

// writeLoop is the only goroutine that writes the key store. It takes the
// writes waiting, up to maxKeyBatch, and commits them in one transaction:
// while a batch commits the next callers queue up, so the batch grows with
// the load and no timer is needed. The writes of one batch are independent
// (each request waits for its write before its next), and a batch sees its
// own earlier writes: two Begins of one key in one batch find the first's
// record, as they would one after the other.
func (k *Keys) writeLoop() {
	defer close(k.wrote)
	batch := make([]keyWrite, 0, maxKeyBatch)
	for {
		batch = batch[:0]
		select {
		case w := <-k.writes:
			batch = append(batch, w)
		case <-k.stop:
			return
		}
	drain:
		for len(batch) < maxKeyBatch {
			select {
			case w := <-k.writes:
				batch = append(batch, w)
			default:
				break drain
			}
		}
		err := k.commit(batch)
		for _, w := range batch {
			w.done <- err
		}
		clear(batch) // drop the finished writes' closures
	}
}

// commit runs batch in one transaction. The transaction is bound to no
// caller's context: one caller giving up must not roll back the others.
func (k *Keys) commit(batch []keyWrite) error {
	tx, err := k.w.BeginTx(context.Background(), nil)
	if err != nil {
		return err
	}
	for _, w := range batch {
		if err := w.run(tx); err != nil {
			_ = tx.Rollback()
			return err
		}
	}
	return tx.Commit()
}
