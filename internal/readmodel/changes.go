package readmodel

import (
	"sync"

	"github.com/google/uuid"
)

// Changes implements Views.Watch for a backend: Watch returns a channel
// that the next Notify naming its id closes, so that a reader waiting for
// one row wakes only when a commit touched that row, not at every commit.
// Its zero value is ready to use.
//
// Readers of one id share a channel; Notify costs a map lookup per id of
// the batch, and nothing more when nobody waits.
type Changes struct {
	mu      sync.Mutex
	watches map[uuid.UUID]*watch
}

// watch is the channel of the readers of one id, and how many they are.
type watch struct {
	ch      chan struct{}
	readers int
}

// Watch returns a channel that the next Notify of id closes, and stop,
// which the caller must call once it no longer waits on the channel (it
// frees the channel when it was the last reader).
func (c *Changes) Watch(id uuid.UUID) (changed <-chan struct{}, stop func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.watches == nil {
		c.watches = map[uuid.UUID]*watch{}
	}
	w, ok := c.watches[id]
	if !ok {
		w = &watch{ch: make(chan struct{})}
		c.watches[id] = w
	}
	w.readers++
	var once sync.Once
	return w.ch, func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			w.readers--
			if w.readers == 0 && c.watches[id] == w {
				delete(c.watches, id)
			}
		})
	}
}

// Notify wakes the readers waiting on any of ids.
func (c *Changes) Notify(ids ...uuid.UUID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.watches) == 0 {
		return
	}
	for _, id := range ids {
		if w, ok := c.watches[id]; ok {
			close(w.ch)
			delete(c.watches, id)
		}
	}
}

// Watching returns how many ids readers wait on (for tests and metrics).
func (c *Changes) Watching() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.watches)
}

// Broadcast wakes every waiting reader, whatever its id.
func (c *Changes) Broadcast() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, w := range c.watches {
		close(w.ch)
		delete(c.watches, id)
	}
}
