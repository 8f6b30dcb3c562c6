package main

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orderd/orderd/internal/store/disktest"
)

// TestStorageFaultE2E runs orderd with its data dir on a small file system
// and fills it: commands answer 503 storage_unavailable with Retry-After
// (never 500), /readyz answers 503 with the store down, and once space is
// freed orderd is ready again and commands succeed, with no request needed
// to notice.
func TestStorageFaultE2E(t *testing.T) {
	dir := disktest.Mount(t, 32<<20)
	s := start(t, dir, nil)
	register := func(i int) response {
		t.Helper()
		return s.call(t, "POST", "/v1/customers", map[string]any{
			"email": "disk" + strconv.Itoa(i) + "@example.com", "first_name": "Disk", "last_name": strings.Repeat("Full", 25),
		}, nil, true)
	}
	if r := register(0); r.Status != 201 {
		t.Fatalf("register on a healthy disk: %d %s", r.Status, r.Body)
	}
	waitReady(t, s, 200, 10*time.Second)

	filler := disktest.Fill(t, dir)
	// The WAL may have room for a few more: register until the disk refuses.
	var refused response
	for i := 1; ; i++ {
		r := register(i)
		if r.Status == 201 {
			if i > 500 {
				t.Fatal("500 commands succeeded on a full disk")
			}
			continue
		}
		refused = r
		break
	}
	if refused.Status != 503 {
		t.Fatalf("command on a full disk: %d %s, want 503", refused.Status, refused.Body)
	}
	if p := refused.problem(t); p.Code != "storage_unavailable" {
		t.Fatalf("command on a full disk: code %q, want storage_unavailable (%s)", p.Code, refused.Body)
	}
	if ra := refused.Header.Get("Retry-After"); ra == "" {
		t.Fatalf("command on a full disk: no Retry-After")
	}
	// Every command answers so while the fault lasts, not only the first.
	for i := range 5 {
		if r := register(1000 + i); r.Status != 503 {
			t.Fatalf("command %d on a full disk: %d %s, want 503", i, r.Status, r.Body)
		}
	}
	ready := waitReady(t, s, 503, 5*time.Second)
	if c := ready.Components["store"]; c.Status != "down" || !strings.Contains(c.Detail, "unavailable") {
		t.Fatalf("/readyz on a full disk: store %+v, want down with the fault", c)
	}

	disktest.Free(t, filler)
	// No command is needed for orderd to notice: /readyz's probe does.
	waitReady(t, s, 200, 30*time.Second)
	if r := register(2000); r.Status != 201 {
		t.Fatalf("register after space was freed: %d %s", r.Status, r.Body)
	}
	// A registration writes its customer's data key, then its events:
	// whichever write met the full disk first counted the fault.
	metrics := string(s.call(t, "GET", "/metrics", nil, nil, true).Body)
	if !strings.Contains(metrics, `orderd_storage_faults_total{op="append"}`) &&
		!strings.Contains(metrics, `orderd_storage_faults_total{op="data_keys"}`) {
		t.Errorf("/metrics has no orderd_storage_faults_total of op append or data_keys")
	}
}

// waitReady polls /readyz until it answers status, and returns its body.
func waitReady(t *testing.T, s *service, status int, within time.Duration) readyzBody {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r := s.call(t, "GET", "/readyz", nil, nil, true)
		var body readyzBody
		r.json(t, &body)
		if r.Status == status {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz answered %d after %s, want %d: %s", r.Status, within, status, r.Body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
