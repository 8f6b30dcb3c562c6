package sqlite

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/orderd/orderd/internal/store"
)

// probeConsumer is the feed_progress row the write probe rewrites while
// writes fail. No subscription may use the name.
const probeConsumer = "orderd:write-probe"

// isFault reports whether err is a failure of the disk under a SQLite file
// rather than of the request: the disk or the file system is full
// (SQLITE_FULL, ENOSPC), read-only (SQLITE_READONLY*, EROFS), failing
// (SQLITE_IOERR*, EIO), or the file cannot be opened (SQLITE_CANTOPEN).
// It looks through every error err wraps.
func isFault(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EIO) ||
		errors.Is(err, syscall.EDQUOT) {
		return true
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff { // the primary code of an extended one
		case sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN:
			return true
		}
	}
	// errors.As stops at the first *sqlite.Error; a joined or doubly
	// wrapped error may hold the fault in another branch.
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if isFault(e) {
				return true
			}
		}
	case interface{ Unwrap() error }:
		return isFault(u.Unwrap())
	}
	return false
}

// asUnavailable returns err wrapping store.ErrUnavailable when it is a storage
// fault (isFault), and err unchanged otherwise (nil included).
func asUnavailable(err error) error {
	if err == nil || errors.Is(err, store.ErrUnavailable) || !isFault(err) {
		return err
	}
	return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
}

// fault wraps a storage fault of op in store.ErrUnavailable and counts it
// in the store's health; a write fault opens an episode. Other errors come
// back unchanged.
func (s *Store) fault(op string, write bool, err error) error {
	if err = asUnavailable(err); errors.Is(err, store.ErrUnavailable) {
		s.health.Fault(op, write, err)
	}
	return err
}

// CheckWrite returns nil while appends and progress saves succeed, and an
// error wrapping store.ErrUnavailable from one that failed for a storage
// fault until a write succeeds again. While writes fail it probes, at most
// every store.ProbeEvery, by rewriting one row of feed_progress through
// the writer, so that the store comes back up without traffic.
func (s *Store) CheckWrite(ctx context.Context) error {
	if s.isClosed() {
		return store.ErrClosed
	}
	return s.health.Check(ctx, func(ctx context.Context) error {
		return s.saveProgress(probeConsumer, time.Now().UnixNano())
	})
}

// StorageFaults returns the storage faults counted since OpenStore, by
// operation: append and progress (the writer's transactions, one per
// failed batch), read, probe, and keys (the idempotency records, when
// KeysOptions.Health is this store's).
func (s *Store) StorageFaults() map[string]int64 { return s.health.Faults() }

// Health returns the store's health, which other files of the data dir
// (keys.db) report their faults to, so that one episode covers the disk.
func (s *Store) Health() *store.Health { return s.health }

var _ store.WriteHealth = (*Store)(nil)
