package main

import (
	"database/sql"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFailedProjectorStaysReadyE2E: a projector that cannot write its read
// models (their customers table dropped under it, on SQLite) fails, and the
// instance stays ready: /readyz answers 200 with the projector "degraded"
// and the error, orderd_worker_up{worker="projector"} is 0, and commands
// are still accepted. A worker's failure must not take the instance out of
// the load balancer: on a cluster, the instance that took the lease next
// would meet the same event, and the fleet would empty.
func TestFailedProjectorStaysReadyE2E(t *testing.T) {
	s := start(t, "", nil)
	s.registerCustomer(t, "before@example.com")
	if m := s.metrics(t); m[`orderd_worker_up{worker="projector"}`] != 1 {
		t.Fatalf("orderd_worker_up of a healthy projector = %v, want 1", m[`orderd_worker_up{worker="projector"}`])
	}

	views, err := filepath.Glob(filepath.Join(s.dataDir, "views*.db"))
	if err != nil || len(views) != 1 {
		t.Fatalf("the read models' file in %s: %v %v", s.dataDir, views, err)
	}
	db, err := sql.Open("sqlite", "file:"+views[0]+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`DROP TABLE customers`); err != nil {
		t.Fatalf("drop the customers read model: %v", err)
	}
	// A command is still accepted; projecting its event fails.
	s.registerCustomer(t, "poison@example.com")

	var body readyzBody
	waitUntil(t, "the projector degraded in /readyz", func() bool {
		r := s.call(t, "GET", "/readyz", nil, nil, true)
		body = readyzBody{}
		r.json(t, &body)
		if r.Status != http.StatusOK || body.Status != "ready" {
			t.Fatalf("/readyz answered %d %s with a failed projector, want 200 ready", r.Status, r.Body)
		}
		return body.Components["projector"].Status == "degraded"
	})
	if p := body.Components["projector"]; !strings.Contains(p.Detail, "customers") || body.Components["store"].Status != "up" {
		t.Errorf("/readyz with a failed projector: %+v", body)
	}
	// The supervisor restarts the failed projector, which is up until its
	// next batch fails again: the gauge must read 0 between the restarts.
	waitUntil(t, "orderd_worker_up of the failed projector reads 0", func() bool {
		return s.metrics(t)[`orderd_worker_up{worker="projector"}`] == 0
	})
	// Still serving: the supervisor restarts the projector meanwhile, and
	// each restart fails again; the instance stays ready throughout.
	s.registerCustomer(t, "after@example.com")
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if r := s.call(t, "GET", "/readyz", nil, nil, true); r.Status != http.StatusOK {
			t.Fatalf("/readyz answered %d with a failed projector: %s", r.Status, r.Body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
