package main

import (
	"context"
	"encoding/json"
	"io"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/orderd/orderd/internal/worker"
)

// TestReadinessShards: /readyz of a worker split into shards shows the
// shards this instance holds, the members, and every shard's holder from
// the balancer's view, with the role active while it holds any; the
// rebuilds' worker shows apart. Two balancers of four shards on one
// SQLite store (the balancing is the engine's business only through its
// leases and membership, which SQLite has too).
func TestReadinessShards(t *testing.T) {
	vars := map[string]string{"ORDERD_DATA_DIR": t.TempDir()}
	cfg, err := parseConfig(nil, func(k string) string { return vars[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	b, err := openBackend(t.Context(), cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	idle := func(ctx context.Context) error { <-ctx.Done(); return nil }
	const ttl = 600 * time.Millisecond
	run := func(s interface{ Serve(context.Context) error }) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Serve(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	a := worker.NewBalanced(b.events, b.events, "projector", "a", 4, ttl, time.Second, idle, log)
	other := worker.NewBalanced(b.events, b.events, "projector", "b", 4, ttl, time.Second, idle, log)
	rebuild := worker.NewElected(b.events, "projector", "a", ttl, idle, log)
	run(a)
	run(other)
	run(rebuild)

	ready := readiness(b, a, rebuild, nil, relayParts{}, nil)
	deadline := time.Now().Add(20 * time.Second)
	for {
		out := ready(t.Context())
		p, r := out["projector"], out["rebuilder"]
		held := 0
		if p.Held != nil {
			held = *p.Held
		}
		holders := map[string]int{}
		here := 0
		for _, sh := range p.Shards {
			holders[sh.Holder]++
			if sh.Here {
				here++
				if sh.Holder != "a" || sh.Epoch < 1 {
					t.Fatalf("a shard held here shows holder %q at epoch %d", sh.Holder, sh.Epoch)
				}
			}
		}
		if len(p.Shards) == 4 && held == 2 && here == 2 && holders["a"] == 2 && holders["b"] == 2 &&
			slices.Equal(p.Members, []string{"a", "b"}) && r.Role == worker.RoleActive && r.Active == "a" {
			if p.Role != worker.RoleActive || p.Status != "up" {
				t.Errorf("projector holding 2 of 4 shards: role %q, status %q; want active, up", p.Role, p.Status)
			}
			body, err := json.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			var fields map[string]any
			if err := json.Unmarshal(body, &fields); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"held", "members", "shards", "role", "active"} {
				if _, ok := fields[f]; !ok {
					t.Errorf("/readyz's projector has no %q: %s", f, body)
				}
			}
			if out["relay"].Status != "off" {
				t.Errorf("relay without brokers: %+v", out["relay"])
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never showed 2 of 4 shards here and 2 on b: projector %+v, rebuilder %+v", p, r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
