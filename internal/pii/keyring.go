package pii

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// ErrErased: the subject's data key was destroyed; its personal fields
// read as Erased.
var ErrErased = errors.New("pii: subject erased")

// Keys is the part of store.DataKeys the keyring needs.
type Keys interface {
	Create(ctx context.Context, k store.WrappedKey) (store.WrappedKey, error)
	Mint(ctx context.Context, k store.WrappedKey) error
	Get(ctx context.Context, subject uuid.UUID) (store.WrappedKey, error)
	Erase(ctx context.Context, subject uuid.UUID, at time.Time) error
	Rewrap(ctx context.Context, fromKEK string, k store.WrappedKey) (bool, error)
	Scan(ctx context.Context, fn func(store.WrappedKey) error) error
}

// Keyring hands out the subjects' data keys: it creates a subject's key on
// first use, unwraps stored keys with the KEK that wrapped them, caches
// the unwrapped keys, erases keys and rewraps them under a new KEK. It is
// safe for concurrent use.
type Keyring struct {
	keys Keys
	ttl  time.Duration
	max  int

	kekMu   sync.RWMutex
	current KEK
	keks    map[string]KEK // by id: current and the old ones still accepted

	mu    sync.Mutex
	cache map[uuid.UUID]cached
}

type cached struct {
	key *DataKey // nil: erased
	at  time.Time
}

// Options tune a Keyring.
type Options struct {
	// Old are KEKs that keys may still be wrapped by: the previous KEK
	// during a rotation. Keys are unwrapped with them and rewrapped under
	// the current KEK by Rotate.
	Old []KEK
	// CacheTTL is how long an unwrapped key is kept before it is read
	// again (which is how an instance learns of another's erasure);
	// 0 means one minute.
	CacheTTL time.Duration
	// CacheSize bounds the cached keys (about 1 KB each, the AES key
	// schedule and GCM state included); 0 means 20,000.
	CacheSize int
}

// NewKeyring returns the keyring of keys, wrapping new keys with current.
func NewKeyring(keys Keys, current KEK, opts Options) *Keyring {
	r := &Keyring{keys: keys, ttl: opts.CacheTTL, max: opts.CacheSize, cache: map[uuid.UUID]cached{}}
	r.SetKEKs(current, opts.Old...)
	if r.ttl <= 0 {
		r.ttl = time.Minute
	}
	if r.max <= 0 {
		r.max = 20_000
	}
	return r
}

// KEKID returns the id of the KEK new keys are wrapped by.
func (r *Keyring) KEKID() string { return r.currentKEK().ID() }

func (r *Keyring) currentKEK() KEK {
	r.kekMu.RLock()
	defer r.kekMu.RUnlock()
	return r.current
}

func (r *Keyring) kek(id string) (KEK, bool) {
	r.kekMu.RLock()
	defer r.kekMu.RUnlock()
	k, ok := r.keks[id]
	return k, ok
}

// SetKEKs replaces the KEKs while the keyring serves: new keys are wrapped
// by current from now on, and keys wrapped by current or old unwrap. Keys
// cached unwrapped stay cached. A rotation then rewraps the keys under
// old (Rotate).
func (r *Keyring) SetKEKs(current KEK, old ...KEK) {
	keks := map[string]KEK{current.ID(): current}
	for _, k := range old {
		if _, dup := keks[k.ID()]; !dup {
			keks[k.ID()] = k
		}
	}
	r.kekMu.Lock()
	defer r.kekMu.Unlock()
	r.current, r.keks = current, keks
}

// wrapAAD binds a wrapped key to its subject.
func wrapAAD(subject uuid.UUID) []byte { return []byte("orderd dek1|" + subject.String()) }

// For returns the subject's key, creating it on first use. It returns
// ErrErased for an erased subject.
func (r *Keyring) For(ctx context.Context, subject uuid.UUID) (*DataKey, error) {
	if k, ok := r.cached(subject); ok {
		if k == nil {
			return nil, ErrErased
		}
		return k, nil
	}
	wk, err := r.keys.Get(ctx, subject)
	if errors.Is(err, store.ErrKeyNotFound) {
		wk, err = r.create(ctx, subject)
	}
	return r.unwrap(ctx, subject, wk, err)
}

// ForNew is For for a subject that is most likely new (the first event of
// a stream names it): it creates the key without reading first. The
// create is conditional, and when the subject has a key (or an erasure)
// it answers with it: for an existing subject it costs what For's read
// costs (one round on CQL), for a new one it saves that read.
func (r *Keyring) ForNew(ctx context.Context, subject uuid.UUID) (*DataKey, error) {
	if k, ok := r.cached(subject); ok {
		if k == nil {
			return nil, ErrErased
		}
		return k, nil
	}
	wk, err := r.create(ctx, subject)
	return r.unwrap(ctx, subject, wk, err)
}

// Mint creates the key of a subject that no one else can name yet (an id
// just minted, not handed out) and caches it: Keys.Mint, which on CQL
// costs no Paxos round. A For or ForNew of the subject that follows finds
// it in the cache, or else in the store.
func (r *Keyring) Mint(ctx context.Context, subject uuid.UUID) (*DataKey, error) {
	raw, wk, err := r.newKey(ctx, subject)
	if err != nil {
		return nil, err
	}
	if err := r.keys.Mint(ctx, wk); err != nil {
		return nil, err
	}
	k, err := NewDataKey(subject, raw)
	if err != nil {
		return nil, err
	}
	r.put(subject, k)
	return k, nil
}

// Existing returns the subject's key without creating one: ErrErased for
// an erased subject, store.ErrKeyNotFound for one that never had a key.
func (r *Keyring) Existing(ctx context.Context, subject uuid.UUID) (*DataKey, error) {
	if k, ok := r.cached(subject); ok {
		if k == nil {
			return nil, ErrErased
		}
		return k, nil
	}
	wk, err := r.keys.Get(ctx, subject)
	return r.unwrap(ctx, subject, wk, err)
}

func (r *Keyring) create(ctx context.Context, subject uuid.UUID) (store.WrappedKey, error) {
	_, wk, err := r.newKey(ctx, subject)
	if err != nil {
		return store.WrappedKey{}, err
	}
	return r.keys.Create(ctx, wk)
}

// newKey makes a subject's data key: raw, and wrapped by the current KEK.
func (r *Keyring) newKey(ctx context.Context, subject uuid.UUID) ([]byte, store.WrappedKey, error) {
	raw := make([]byte, KEKSize)
	if _, err := rand.Read(raw); err != nil {
		return nil, store.WrappedKey{}, err
	}
	current := r.currentKEK()
	wrapped, err := current.Wrap(ctx, raw, wrapAAD(subject))
	if err != nil {
		return nil, store.WrappedKey{}, fmt.Errorf("pii: wrap: %w", err)
	}
	return raw, store.WrappedKey{Subject: subject, KEK: current.ID(), Wrapped: wrapped, Created: time.Now().UTC()}, nil
}

func (r *Keyring) unwrap(ctx context.Context, subject uuid.UUID, wk store.WrappedKey, err error) (*DataKey, error) {
	switch {
	case errors.Is(err, store.ErrKeyErased):
		r.put(subject, nil)
		return nil, ErrErased
	case err != nil:
		return nil, err
	}
	kek, ok := r.kek(wk.KEK)
	if !ok {
		return nil, fmt.Errorf("pii: the key of %s is wrapped by KEK %s, which is not configured (current %s): %w",
			subject, wk.KEK, r.KEKID(), store.ErrUnavailable)
	}
	raw, err := kek.Unwrap(ctx, wk.Wrapped, wrapAAD(subject))
	if err != nil {
		return nil, fmt.Errorf("pii: unwrap the key of %s with KEK %s: %w", subject, wk.KEK, err)
	}
	k, err := NewDataKey(subject, raw)
	if err != nil {
		return nil, err
	}
	r.put(subject, k)
	return k, nil
}

func (r *Keyring) cached(subject uuid.UUID) (*DataKey, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.cache[subject]
	if !ok || time.Since(c.at) > r.ttl && c.key != nil { // an erasure is forever
		return nil, false
	}
	return c.key, true
}

func (r *Keyring) put(subject uuid.UUID, k *DataKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cache) >= r.max {
		for id := range r.cache { // drop one at random
			delete(r.cache, id)
			break
		}
	}
	r.cache[subject] = cached{key: k, at: time.Now()}
}

// Erase destroys the subject's key in the store and in this keyring's
// cache. Other instances' caches drop it within Options.CacheTTL; their
// reads show the subject erased at once anyway, from its CustomerErased
// event.
func (r *Keyring) Erase(ctx context.Context, subject uuid.UUID, at time.Time) error {
	if subject == uuid.Nil {
		return errors.New("pii: the nil subject (the claim secret) is never erased")
	}
	if err := r.keys.Erase(ctx, subject, at); err != nil {
		return err
	}
	r.put(subject, nil)
	return nil
}

// Rotation is what Rotate did.
type Rotation struct {
	Seen      int // live keys scanned
	Rewrapped int // keys rewrapped under the current KEK
}

// Rotate rewraps every key not wrapped by the current KEK, while the
// keyring serves: each key is unwrapped with the old KEK, wrapped with the
// current one and replaced only if still under the old one (a key erased
// meanwhile stays erased). It returns an error, and rewraps nothing of
// that key, when a key's KEK is unknown. Once it returned without error
// and no instance is still configured with the old KEK as current, the
// old KEK may be retired.
func (r *Keyring) Rotate(ctx context.Context) (Rotation, error) {
	var rot Rotation
	current := r.currentKEK()
	err := r.keys.Scan(ctx, func(wk store.WrappedKey) error {
		rot.Seen++
		if wk.KEK == current.ID() {
			return nil
		}
		kek, ok := r.kek(wk.KEK)
		if !ok {
			return fmt.Errorf("pii: the key of %s is wrapped by KEK %s, which is not configured", wk.Subject, wk.KEK)
		}
		raw, err := kek.Unwrap(ctx, wk.Wrapped, wrapAAD(wk.Subject))
		if err != nil {
			return fmt.Errorf("pii: unwrap the key of %s: %w", wk.Subject, err)
		}
		wrapped, err := current.Wrap(ctx, raw, wrapAAD(wk.Subject))
		if err != nil {
			return fmt.Errorf("pii: wrap the key of %s: %w", wk.Subject, err)
		}
		from := wk.KEK
		wk.KEK, wk.Wrapped = current.ID(), wrapped
		ok, err = r.keys.Rewrap(ctx, from, wk)
		if err != nil {
			return err
		}
		if ok {
			rot.Rewrapped++
		}
		return nil
	})
	return rot, err
}

// ClaimSecret returns the deployment's secret of the e-mail claims' keyed
// hash: a data key of the nil subject, created by the first instance that
// asks and kept (wrapped, rotated) like every other key.
func (r *Keyring) ClaimSecret(ctx context.Context) (*Hasher, error) {
	k, err := r.For(ctx, uuid.Nil)
	if err != nil {
		return nil, fmt.Errorf("pii: claim secret: %w", err)
	}
	return NewHasher(k.Raw()), nil
}
