package main

import (
	"context"
	"fmt"
	"sync"

	"github.com/orderd/orderd/internal/api"
)

// positioned is a worker that reports how far through the feed it is.
type positioned interface {
	Serve(ctx context.Context) error
	Position() int64
}

// watched runs a worker for the supervisor and remembers whether it is
// running and why it last stopped, for /readyz.
type watched struct {
	Service positioned

	mu      sync.Mutex
	running bool
	lastErr error
}

func (w *watched) Serve(ctx context.Context) (err error) {
	w.set(true, nil)
	defer func() {
		// The supervisor recovers a panic; record it on the way.
		if p := recover(); p != nil {
			w.set(false, fmt.Errorf("panic: %v", p))
			panic(p)
		}
		w.set(false, err)
	}()
	return w.Service.Serve(ctx)
}

func (w *watched) set(running bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.running, w.lastErr = running, err
}

func (w *watched) Position() int64 { return w.Service.Position() }

func (w *watched) component(lag *int64) api.Component {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := api.Component{Status: "up", Lag: lag}
	if !w.running {
		c.Status = "down"
		if w.lastErr != nil {
			c.Detail = w.lastErr.Error()
		} else {
			c.Detail = "not running"
		}
	}
	return c
}
