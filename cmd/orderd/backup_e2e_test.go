package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/relay/kafkatest"
	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/store"
)

const backupToken = "backup-s3cret"

// orderdCommand runs the orderd binary with args and returns its combined
// output and whether it exited 0.
func orderdCommand(t *testing.T, args ...string) (string, bool) {
	t.Helper()
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "ORDERD_ADMIN_TOKEN=", "ORDERD_DATA_DIR=")
	out, err := cmd.CombinedOutput()
	return string(out), err == nil
}

// ack is a command the service acknowledged, and when.
type ack struct {
	id   uuid.UUID
	key  string // its Idempotency-Key
	body map[string]any
	at   time.Time
}

// TestBackupRestoreUnderLoad takes a backup with `orderd backup` while
// clients create orders, restores it with `orderd restore` into a new data
// directory and starts orderd on it: every order acknowledged before the
// backup was requested is there, answered by the read models (which the
// restored orderd projected again) and by its idempotency key; the read
// models hold exactly the orders of the restored log; and the relay resumes
// where the copy stood, publishing to Kafka whatever the copy's progress had
// not, so that no order acknowledged before the backup is missing there.
func TestBackupRestoreUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	env := kafkaEnv(t, kafkatest.Brokers(t), "ORDERD_ADMIN_TOKEN", backupToken)
	if _, err := binary(); err != nil { // built before the clock starts
		t.Fatal(err)
	}
	s1 := start(t, "", env)
	cust := s1.registerCustomer(t, "backup@example.com")

	var (
		mu    sync.Mutex
		acks  []ack
		stop  atomic.Bool
		wg    sync.WaitGroup
		write = func() {
			defer wg.Done()
			for !stop.Load() {
				key := uuid.NewString()
				body := map[string]any{"customer_id": cust.ID, "items": []itemBody{{uuid.NewString(), 1}}}
				var res commandResult
				s1.do(t, "POST", "/v1/orders", body, http.StatusCreated, "Idempotency-Key", key).json(t, &res)
				mu.Lock()
				acks = append(acks, ack{res.ID, key, body, time.Now()})
				mu.Unlock()
			}
		}
	)
	for range 4 {
		wg.Add(1)
		go write()
	}
	// The copy is to catch the relay part-way: the backup is requested once
	// the relay has saved some progress (its first publish waits for Kafka to
	// make the topics, which under load takes longer than the writes run).
	time.Sleep(500 * time.Millisecond)
	events := filepath.Join(s1.dataDir, "events.db")
	waitUntil(t, "the relay saved some progress", func() bool {
		return scalar(t, events, `SELECT coalesce(max(position), 0) FROM feed_progress WHERE consumer = '`+relay.Consumer+`'`) > 0
	})
	target := filepath.Join(t.TempDir(), "backup")
	requested := time.Now()
	out, ok := orderdCommand(t, "backup", "-addr", s1.base, "-token", backupToken, "-to", target)
	took := time.Since(requested)
	if !ok {
		t.Fatalf("orderd backup failed: %s", out)
	}
	time.Sleep(300 * time.Millisecond) // load goes on after the backup too
	stop.Store(true)
	wg.Wait()
	t.Logf("orderd backup: %s(%s from request to exit)", out, took)

	var before, later int
	for _, a := range acks {
		if a.at.Before(requested) {
			before++
		} else {
			later++
		}
	}
	if before < 20 || later < 20 {
		t.Fatalf("%d orders acknowledged before the backup and %d after: the load did not run across it", before, later)
	}
	var m store.Backup
	raw, err := os.ReadFile(filepath.Join(target, sqlite.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d orders acknowledged before the backup, %d after; copy's head %d, writes paused %s", before, later, m.Head, m.PausedFor)
	copied := filepath.Join(target, "events.db")
	if n := scalar(t, copied, `SELECT count(*) FROM feed_progress WHERE consumer = 'projector'`); n != 0 {
		t.Fatal("the copy kept the projector's progress, but not its read models")
	}
	if err := s1.stop(); err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "restored")
	if out, ok := orderdCommand(t, "restore", "-from", target, "-data-dir", dir); !ok {
		t.Fatalf("orderd restore failed: %s", out)
	}
	relayAt := scalar(t, filepath.Join(dir, "events.db"), `SELECT coalesce(max(position), 0) FROM feed_progress WHERE consumer = '`+relay.Consumer+`'`)
	if relayAt > m.Head || relayAt == 0 {
		t.Fatalf("the restored relay's progress is %d; the copy's head is %d", relayAt, m.Head)
	}
	restoredOrders := scalar(t, filepath.Join(dir, "events.db"), `SELECT count(DISTINCT aggregate_id) FROM events WHERE aggregate_type = 'Order'`)

	// The backup holds the data keys, not the key-encryption key: the
	// restored deployment runs with the source's (docs/operations.md).
	env["ORDERD_KEK_FILE"] = filepath.Join(s1.dataDir, "kek")
	s2 := start(t, dir, env)
	var c customerBody
	s2.do(t, "GET", "/v1/customers/"+cust.ID.String()+"?min_version=1", nil, http.StatusOK).json(t, &c)
	if c.Email != "backup@example.com" {
		t.Fatalf("the restored customer reads %+v", c)
	}
	for _, a := range acks {
		if !a.at.Before(requested) {
			continue
		}
		s2.order(t, a.id, 1) // min_version: the projector has caught up with it
	}
	// The read models hold every order of the restored log, and no other,
	// once the projector has reached the log's last order.
	lastOrder := scalarText(t, filepath.Join(dir, "events.db"), `SELECT aggregate_id FROM events WHERE aggregate_type = 'Order' ORDER BY position DESC LIMIT 1`)
	s2.order(t, uuid.MustParse(lastOrder), 1)
	listed, after := 0, ""
	for {
		var page struct {
			Orders    []struct{ ID uuid.UUID }
			NextAfter *uuid.UUID `json:"next_after"`
		}
		s2.do(t, "GET", "/v1/customers/"+cust.ID.String()+"/orders?limit=500"+after, nil, http.StatusOK).json(t, &page)
		listed += len(page.Orders)
		if page.NextAfter == nil {
			break
		}
		after = "&after=" + page.NextAfter.String()
	}
	if int64(listed) != restoredOrders {
		t.Fatalf("the restored read models list %d orders, the restored log holds %d", listed, restoredOrders)
	}
	// The keys came along: repeating an acknowledged create with its key
	// answers the same order instead of creating another.
	first := acks[0]
	var res commandResult
	s2.do(t, "POST", "/v1/orders", first.body, http.StatusCreated, "Idempotency-Key", first.key).json(t, &res)
	if res.ID != first.id {
		t.Fatalf("a repeated create answered order %s, the key's order is %s", res.ID, first.id)
	}

	// Kafka: the restored relay publishes from the copy's progress on. It
	// publishes into topics of its own here, so that what it sent can be
	// told from what the first orderd did: exactly the orders' events after
	// the copy's relay progress, and with the first orderd's records, every
	// order acknowledged before the backup.
	brokers := kafkatest.Brokers(t)
	published := map[string]bool{}
	for _, msg := range consumeAll(t, brokers, env["ORDERD_KAFKA_TOPIC_PREFIX"]+"order-events") {
		published[string(msg.Key)] = true
	}
	if err := s2.stop(); err != nil {
		t.Fatal(err)
	}
	env2 := kafkaEnv(t, brokers, "ORDERD_ADMIN_TOKEN", backupToken, "ORDERD_KEK_FILE", env["ORDERD_KEK_FILE"])
	want := scalar(t, filepath.Join(dir, "events.db"), fmt.Sprintf(`SELECT count(*) FROM events WHERE aggregate_type = 'Order' AND position > %d`, relayAt))
	// s2 published them into env's topics already: start again from the
	// copy, into env2's.
	dir2 := filepath.Join(t.TempDir(), "restored2")
	if out, ok := orderdCommand(t, "restore", "-from", target, "-data-dir", dir2); !ok {
		t.Fatalf("orderd restore failed: %s", out)
	}
	start(t, dir2, env2)
	t.Logf("relay progress in the copy %d of %d: %d order events left to publish", relayAt, m.Head, want)
	if want == 0 {
		return // the copy's relay was caught up: nothing to resume
	}
	var again []string
	waitUntil(t, "the restored relay published what the copy had not", func() bool {
		again = again[:0]
		for _, msg := range consumeAll(t, brokers, env2["ORDERD_KAFKA_TOPIC_PREFIX"]+"order-events") {
			again = append(again, string(msg.Key))
		}
		return int64(len(again)) >= want
	})
	if int64(len(again)) != want {
		t.Fatalf("the restored relay published %d order events, want the %d after its progress", len(again), want)
	}
	for _, k := range again {
		published[k] = true
	}
	for _, a := range acks {
		if a.at.Before(requested) && !published[a.id.String()] {
			t.Fatalf("order %s, acknowledged before the backup, is in no Kafka topic", a.id)
		}
	}
}

// TestBackupRefusals: the route refuses a relative path, a target that is
// not empty and a request without the admin token, each with its problem;
// restore refuses a data directory that is not empty, a directory without
// a manifest and a backup whose file no longer matches its manifest.
func TestBackupRefusals(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	s := start(t, "", map[string]string{"ORDERD_ADMIN_TOKEN": backupToken})
	s.registerCustomer(t, "refusals@example.com")
	auth := []string{"Authorization", "Bearer " + backupToken}

	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "x"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if p := s.do(t, "POST", "/v1/admin/backups", map[string]string{"to": full}, http.StatusConflict, auth...).problem(t); p.Code != "backup_target_refused" || !strings.Contains(p.Detail, "not empty") {
		t.Fatalf("a non-empty target: %+v", p)
	}
	if p := s.do(t, "POST", "/v1/admin/backups", map[string]string{"to": "relative/dir"}, http.StatusBadRequest, auth...).problem(t); p.Field != "/to" {
		t.Fatalf("a relative target: %+v", p)
	}
	if r := s.call(t, "POST", "/v1/admin/backups", map[string]string{"to": t.TempDir()}, nil, false); r.Status != http.StatusUnauthorized || r.problem(t).Code != "unauthorized" {
		t.Fatalf("a backup without the token: %d %s", r.Status, r.Body)
	}
	if out, ok := orderdCommand(t, "backup", "-addr", s.base, "-to", t.TempDir()); ok || !strings.Contains(out, "401") {
		t.Fatalf("orderd backup without a token: ok=%v %s", ok, out)
	}

	target := filepath.Join(t.TempDir(), "b")
	var m store.Backup
	s.do(t, "POST", "/v1/admin/backups", map[string]string{"to": target}, http.StatusCreated, auth...).json(t, &m)
	if m.Head != 1 || len(m.Files) != 5 { // the customer; events, keys, snapshots, relay, data keys
		t.Fatalf("manifest %+v", m)
	}

	busy := t.TempDir()
	if err := os.WriteFile(filepath.Join(busy, "events.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, ok := orderdCommand(t, "restore", "-from", target, "-data-dir", busy); ok || !strings.Contains(out, "not empty") {
		t.Fatalf("restore into a non-empty data dir: ok=%v %s", ok, out)
	}
	if out, ok := orderdCommand(t, "restore", "-from", t.TempDir(), "-data-dir", filepath.Join(t.TempDir(), "d")); ok || !strings.Contains(out, "not a complete backup") {
		t.Fatalf("restore from a directory without a manifest: ok=%v %s", ok, out)
	}
	keys := filepath.Join(target, "keys.db")
	b, err := os.ReadFile(keys)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 0xff
	if err := os.WriteFile(keys, b, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "d")
	if out, ok := orderdCommand(t, "restore", "-from", target, "-data-dir", dir); ok || !strings.Contains(out, "keys.db does not match the manifest") {
		t.Fatalf("restore of a tampered backup: ok=%v %s", ok, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "events.db")); err == nil {
		t.Fatal("a refused restore wrote files")
	}
}

// TestBackupOnCQL: on ScyllaDB or Cassandra the route answers 501
// backup_not_supported, pointing to the per-node procedure, and orderd
// restore refuses to run.
func TestBackupOnCQL(t *testing.T) {
	env := scyllaEnv(t)
	env["ORDERD_ADMIN_TOKEN"] = backupToken
	s := start(t, "", env)
	p := s.do(t, "POST", "/v1/admin/backups", map[string]string{"to": filepath.Join(t.TempDir(), "b")}, http.StatusNotImplemented,
		"Authorization", "Bearer "+backupToken).problem(t)
	if p.Code != "backup_not_supported" || !strings.Contains(p.Detail, "nodetool snapshot") {
		t.Fatalf("a backup on CQL: %+v", p)
	}
	if out, ok := orderdCommand(t, "restore", "-from", t.TempDir(), "-store", "scylla", "-scylla-hosts", env["ORDERD_SCYLLA_HOSTS"], "-data-dir", t.TempDir()); ok || !strings.Contains(out, "snapshots") {
		t.Fatalf("orderd restore on CQL: ok=%v %s", ok, out)
	}
}
