package oidc

import (
	"crypto/sha256"
	"sync"
	"time"
)

// A client sends the same token with every request until it expires, and
// checking its signature is most of the cost of a check (an RSA-2048
// verification, about 0.1-0.4 ms here). A token that passed is remembered
// for a short while, by its digest.
const (
	// cacheFor is how long a verified token is taken without a new check
	// (never past its expiry and the leeway). It bounds how long a key the
	// provider retired still admits the tokens it signed.
	cacheFor = 30 * time.Second
	// cacheSize bounds the memory: about 200 bytes an entry.
	cacheSize = 10_000
)

type cachedToken struct {
	tok   Token
	until time.Time
}

// tokenCache is the tokens verified lately. Its zero value is empty.
type tokenCache struct {
	mu      sync.Mutex
	entries map[[sha256.Size]byte]cachedToken
}

func (c *tokenCache) get(raw string, now time.Time) (Token, bool) {
	key := sha256.Sum256([]byte(raw))
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || !now.Before(e.until) {
		return Token{}, false
	}
	return e.tok, true
}

func (c *tokenCache) put(raw string, tok Token, until, now time.Time) {
	key := sha256.Sum256([]byte(raw))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = make(map[[sha256.Size]byte]cachedToken)
	}
	if len(c.entries) >= cacheSize {
		// Full: the entries that lapsed go; if none did (more clients than
		// the cache holds), all go, and are checked again.
		for k, e := range c.entries {
			if !now.Before(e.until) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= cacheSize {
			clear(c.entries)
		}
	}
	c.entries[key] = cachedToken{tok: tok, until: until}
}
