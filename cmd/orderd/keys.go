package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/api"
	"github.com/orderd/orderd/internal/pii"
	"github.com/orderd/orderd/internal/store"
)

// keysConfig is how orderd finds the key-encryption key (KEK) that wraps
// the data keys of personal data (crypto-shredding, see internal/pii).
type keysConfig struct {
	kek, kekFile       string // the current KEK: as text (ORDERD_KEK) or in a file
	oldKEK, oldKEKFile string // the previous KEK during a rotation
	cacheTTL           time.Duration
}

// keySettings are the "Personal data" settings. The KEKs' values are only
// stored here and parsed by newKeyring, so that an error never echoes a
// key into a log.
func keySettings(k *keysConfig) []*setting {
	return []*setting{
		{name: "kek-file", arg: "path", shown: "<data-dir>/kek, made on first start", usage: "file of the key-encryption key (32 bytes in hex or base64) that wraps the data keys of personal data; every instance of a cluster needs the same",
			parse: text(&k.kekFile)},
		{name: "kek", arg: "key", usage: "the key-encryption key itself (32 bytes in hex or base64), best given as ORDERD_KEK; wins over -kek-file",
			parse: text(&k.kek)},
		{name: "kek-old-file", arg: "path", usage: "file of the previous key-encryption key during a rotation (a missing file: none): data keys it wrapped are rewrapped under the current one while orderd serves; SIGHUP reads both files again (docs/operations.md)",
			parse: text(&k.oldKEKFile)},
		{name: "kek-old", arg: "key", usage: "the previous key-encryption key itself, as ORDERD_KEK_OLD; wins over -kek-old-file",
			parse: text(&k.oldKEK)},
		{name: "key-cache-ttl", arg: "duration", def: "1m", usage: "how long an instance keeps a data key unwrapped in memory: the longest another instance may still decrypt a subject's old records after its erasure",
			parse: duration(&k.cacheTTL)},
	}
}

// loadKEKs returns the current KEK and the old one (nil: none) of cfg.
// With neither -kek nor -kek-file the KEK is <data-dir>/kek, made on first
// start, which the log says.
func loadKEKs(cfg config, log *zap.Logger) (current, old pii.KEK, err error) {
	k := cfg.keys
	switch {
	case k.kek != "":
		if current, err = pii.ParseKEK(k.kek); err != nil {
			return nil, nil, fmt.Errorf("ORDERD_KEK: %w", err) // never the value
		}
	case k.kekFile != "":
		if current, err = pii.ReadKEKFile(k.kekFile); err != nil {
			return nil, nil, err
		}
	default:
		path := filepath.Join(cfg.dataDir, "kek")
		lk, created, err := pii.EnsureKEKFile(path)
		if err != nil {
			return nil, nil, err
		}
		current = lk
		if created {
			log.Warn("made a key-encryption key for personal data: keep it safe and out of backups of the data; without it the personal data is lost (set -kek-file or ORDERD_KEK; a cluster's instances need the same)",
				zap.String("path", path), zap.String("kek", lk.ID()))
		} else {
			log.Info("key-encryption key of personal data", zap.String("path", path), zap.String("kek", lk.ID()))
		}
	}
	switch {
	case k.oldKEK != "":
		if old, err = pii.ParseKEK(k.oldKEK); err != nil {
			return nil, nil, fmt.Errorf("ORDERD_KEK_OLD: %w", err)
		}
	case k.oldKEKFile != "":
		// A missing file is no old KEK: -kek-old-file may name where the
		// next rotation will put it (see reloadOnHangup).
		lk, err := pii.ReadKEKFile(k.oldKEKFile)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, nil, err
		default:
			old = lk
		}
	}
	if old != nil && old.ID() == current.ID() {
		return nil, nil, errors.New("the old key-encryption key is the current one")
	}
	return current, old, nil
}

// newKeyring returns the keyring of personal data on the backend's data
// keys, and, when an old KEK is configured, starts rewrapping every data
// key under the current one in the background (rotations of several
// instances at once are safe: each rewrap is conditional).
func newKeyring(ctx context.Context, cfg config, b *backend, log *zap.Logger) (*pii.Keyring, error) {
	current, old, err := loadKEKs(cfg, log)
	if err != nil {
		return nil, err
	}
	opts := pii.Options{CacheTTL: cfg.keys.cacheTTL}
	if old != nil {
		opts.Old = []pii.KEK{old}
	}
	ring := pii.NewKeyring(b.datakeys, current, opts)
	r := &rotator{ring: ring, log: log}
	if old != nil {
		r.start(ctx, old.ID())
	}
	go reloadOnHangup(ctx, cfg, ring, r, log)
	return ring, nil
}

// rotator runs one rotation at a time.
type rotator struct {
	ring    *pii.Keyring
	log     *zap.Logger
	mu      sync.Mutex
	running bool
}

// start begins rotating from old unless a rotation runs.
func (r *rotator) start(ctx context.Context, old string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running {
		return
	}
	r.running = true
	go func() {
		rotate(ctx, r.ring, old, r.log)
		r.mu.Lock()
		r.running = false
		r.mu.Unlock()
	}()
}

// reloadOnHangup reads the KEK files again on SIGHUP, so that a single
// instance (SQLite) rotates its KEK without a restart: put the current KEK
// in -kek-old-file and the new one in -kek-file, then send SIGHUP; new
// keys are wrapped by the new KEK at once, and the keys under the old one
// are rewrapped in the background (docs/operations.md). A KEK given in the
// environment (ORDERD_KEK) does not change without a restart.
func reloadOnHangup(ctx context.Context, cfg config, ring *pii.Keyring, r *rotator, log *zap.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		current, old, err := loadKEKs(cfg, log)
		if err != nil {
			log.Error("SIGHUP: key-encryption keys not reloaded; the ones loaded before stay", zap.Error(err))
			continue
		}
		if old == nil {
			ring.SetKEKs(current)
			log.Info("SIGHUP: key-encryption key reloaded", zap.String("kek", current.ID()))
			continue
		}
		ring.SetKEKs(current, old)
		log.Info("SIGHUP: key-encryption keys reloaded", zap.String("kek", current.ID()), zap.String("old", old.ID()))
		r.start(ctx, old.ID())
	}
}

// rotate rewraps the data keys under the current KEK, pass after pass,
// until a pass finds none left under another (keys created meanwhile by an
// instance still running with the old KEK as its current one are found by
// a later pass), retrying after an error.
func rotate(ctx context.Context, ring *pii.Keyring, old string, log *zap.Logger) {
	log.Info("rotating the key-encryption key", zap.String("from", old), zap.String("to", ring.KEKID()))
	total := 0
	for {
		rot, err := ring.Rotate(ctx)
		total += rot.Rewrapped
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			log.Warn("key rotation pass failed; retrying", zap.Error(err))
		case rot.Rewrapped == 0:
			log.Info("key rotation done: no data key is wrapped by the old KEK any more; once every instance runs with the new one, remove the old one (-kek-old-file, ORDERD_KEK_OLD)",
				zap.String("from", old), zap.String("to", ring.KEKID()), zap.Int("rewrapped", total), zap.Int("keys", rot.Seen))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// openedLog is the event log of GET /v1/events/stream with the personal
// fields decrypted (pii.Erased once erased), as the other API reads show
// them; Kafka's records keep them encrypted.
type openedLog struct {
	api.EventLog
	keys aggregate.Keys
}

// openLog returns log decrypting, or nil for no log (CQL).
func openLog(log api.EventLog, keys aggregate.Keys) api.EventLog {
	if log == nil {
		return nil
	}
	return openedLog{EventLog: log, keys: keys}
}

// ReadFeed reads the events and decrypts their personal fields.
func (l openedLog) ReadFeed(ctx context.Context, after int64, limit int) ([]store.Event, error) {
	evs, err := l.EventLog.ReadFeed(ctx, after, limit)
	if err != nil {
		return nil, err
	}
	return aggregate.OpenEvents(ctx, l.keys, evs)
}
