package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
)

// TestFrozenCassandraE2E freezes (SIGSTOP) the Cassandra node under orderd
// for 9 s while clients create orders with ids of their own, then resumes
// it (SIGCONT). No create is answered 409 (every id is new: a 409 would be
// false), nor 500: each answer is 201, 503 storage_unavailable with
// Retry-After, or the client's timeout. Every 201 is stored with its
// request's correlation id. A 503 or a timeout may have been stored or
// not: an uncertain append says so rather than guess.
//
// The node is the test's own, never the one on CASSANDRA_PORT that other
// tests share: scripts/cassandra.sh starts it on FROZEN_CASSANDRA_PORT,
// default CASSANDRA_PORT+10000 (19042; its storage port follows), and it is
// stopped and reset at the end. A node already answering there is someone
// else's: the test freezes only a node it started, and fails (skips
// locally) instead. Under -short it skips; without java it skips, or fails
// under CI=true.
//
// orderd runs as a child process (startChild: the driver races with
// itself when a prepare fails under concurrent requests).
func TestFrozenCassandraE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts a Cassandra node of its own")
	}
	pid, port := freezableNode(t)
	host := "127.0.0.1:" + port
	ks := "orderd_freeze_" + randomHex(t, 8)
	t.Cleanup(func() { dropKeyspace(t, host, ks) })

	s := startChild(t, map[string]string{
		// The default -scylla-timeout (3 s): the settling read of an append
		// sent as the node froze is in flight when it resumes, and races the
		// stalled transaction, as in issue 16.
		"ORDERD_STORE": "scylla", "ORDERD_SCYLLA_HOSTS": host, "ORDERD_SCYLLA_KEYSPACE": ks,
	})
	cust := s.registerCustomer(t, "frozen@example.com")

	// Clients create orders until told to stop; each keeps its answers.
	client := &http.Client{Timeout: 12 * time.Second}
	stop := make(chan struct{})
	var mu sync.Mutex
	var creates []freezeCreate
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c := createOnce(s.base, client, cust.ID)
				mu.Lock()
				creates = append(creates, c)
				mu.Unlock()
			}
		})
	}
	// Freeze once creates flow (the fresh node's first transactions are slow).
	waitUntil(t, "50 creates before the freeze", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(creates) >= 50
	})
	frozenAt := time.Now()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP %d: %v", pid, err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Errorf("SIGCONT %d: %v", pid, err)
			}
		}
	}
	defer resume() // a failing test never leaves the node frozen
	time.Sleep(9 * time.Second)
	resume()
	resumedAt := time.Now()
	time.Sleep(4 * time.Second)
	close(stop)
	wg.Wait()

	// Once the node serves again, every create is looked up.
	waitReady(t, s, 200, 30*time.Second)
	count := map[string]int{}
	var inFreeze, storedUncertain int // creates caught by the freeze; of the 503s and timeouts, those stored
	for _, c := range creates {
		count[c.outcome()]++
		if c.start.Before(frozenAt) && c.end.After(frozenAt.Add(time.Second)) {
			inFreeze++ // sent before the node froze and held by it: its append met the freeze
		}
		switch c.outcome() {
		case "201", "503", "timeout":
		default:
			t.Errorf("create %s: %s %s, want 201, 503 or a timeout (never a 409 or 500)", c.id, c.outcome(), c.body)
			continue
		}
		if c.status == http.StatusServiceUnavailable {
			if c.retryAfter == "" || !strings.Contains(c.body, "storage_unavailable") {
				t.Errorf("create %s: 503 without Retry-After or storage_unavailable: %q %s", c.id, c.retryAfter, c.body)
			}
		}
		stored := storedCreate(t, s, c.id)
		switch {
		case c.status == http.StatusCreated && stored != c.correlation:
			t.Errorf("create %s answered 201, but its OrderCreated has correlation %s (want %s)", c.id, stored, c.correlation)
		case c.status != http.StatusCreated && stored != uuid.Nil:
			storedUncertain++
			if stored != c.correlation {
				t.Errorf("create %s stored with correlation %s, not its own %s", c.id, stored, c.correlation)
			}
		}
	}
	var slowest time.Duration
	for _, c := range creates {
		slowest = max(slowest, c.end.Sub(c.start))
	}
	t.Logf("%d creates: %v; %d caught by the freeze; %d answered 503 or a timeout but stored after all; slowest %v",
		len(creates), count, inFreeze, storedUncertain, slowest.Round(time.Millisecond))
	if inFreeze == 0 {
		t.Fatal("no create was in flight during the freeze: the test tested nothing")
	}
	var after int
	for _, c := range creates {
		if c.start.After(resumedAt.Add(time.Second)) && c.status == http.StatusCreated {
			after++
		}
	}
	if after == 0 {
		t.Error("no create succeeded after the node resumed")
	}
}

// freezeCreate is one create and its answer.
type freezeCreate struct {
	id, correlation uuid.UUID
	start, end      time.Time
	status          int // 0: the client timed out
	retryAfter      string
	body            string
	err             error
}

func (c freezeCreate) outcome() string {
	if c.err != nil {
		var ne interface{ Timeout() bool }
		if errors.As(c.err, &ne) && ne.Timeout() {
			return "timeout"
		}
		return "error: " + c.err.Error()
	}
	return strconv.Itoa(c.status)
}

// createOnce posts one create with an id and a correlation id of its own.
func createOnce(base string, client *http.Client, customer uuid.UUID) freezeCreate {
	c := freezeCreate{id: uuid.Must(uuid.NewV7()), correlation: uuid.New(), start: time.Now()}
	body, _ := json.Marshal(map[string]any{"id": c.id, "customer_id": customer,
		"items": []map[string]any{{"product_id": uuid.NewString(), "quantity": 1}}})
	req, _ := http.NewRequest("POST", base+"/v1/orders", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Correlation-ID", c.correlation.String())
	resp, err := client.Do(req)
	c.end = time.Now()
	if err != nil {
		c.err = err
		return c
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	c.status, c.retryAfter, c.body = resp.StatusCode, resp.Header.Get("Retry-After"), b.String()
	return c
}

// storedCreate returns the correlation id of order id's OrderCreated, or
// uuid.Nil when the order has no events.
func storedCreate(t *testing.T, s *service, id uuid.UUID) uuid.UUID {
	t.Helper()
	r := s.call(t, "GET", "/v1/orders/"+id.String()+"/events", nil, nil, true)
	if r.Status == http.StatusNotFound {
		return uuid.Nil
	}
	if r.Status != http.StatusOK {
		t.Fatalf("history of %s: %d %s", id, r.Status, r.Body)
	}
	var body struct{ Events []envelope }
	r.json(t, &body)
	if len(body.Events) == 0 || body.Events[0].EventType != "OrderCreated" {
		t.Fatalf("history of %s: %+v", id, body.Events)
	}
	return body.Events[0].CorrelationID
}

// freezableNode starts a Cassandra node of the test's own through
// scripts/cassandra.sh, stopped and reset at cleanup, and returns its pid
// and CQL port (FROZEN_CASSANDRA_PORT, default CASSANDRA_PORT+10000).
func freezableNode(t *testing.T) (int, string) {
	t.Helper()
	n := ownCassandraNode(t, "FROZEN_CASSANDRA_PORT", 10000)
	return n.pid(), n.port
}

// cassandraNode is a Cassandra node of a test's own, started through
// scripts/cassandra.sh, which the test may stop, kill or freeze.
type cassandraNode struct {
	t       *testing.T
	port    string
	pidFile string
	script  string
}

// ownCassandraNode starts a Cassandra node of the test's own on the port
// in portVar, default CASSANDRA_PORT+offset (its storage port follows),
// stopped and reset at cleanup. A node already answering there is someone
// else's: the test then fails (skips locally) rather than touch it; so it
// does without java.
func ownCassandraNode(t *testing.T, portVar string, offset int) *cassandraNode {
	t.Helper()
	port := os.Getenv(portVar)
	if port == "" {
		shared, err := strconv.Atoi(cmp.Or(os.Getenv("CASSANDRA_PORT"), "9042"))
		if err != nil {
			t.Fatalf("CASSANDRA_PORT: %v", err)
		}
		port = strconv.Itoa(shared + offset)
	}
	missing := func(msg string) {
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cache := os.Getenv("ORDERD_CACHE")
	if cache == "" {
		cache = filepath.Join(repo, ".cache")
	}
	n := &cassandraNode{t: t, port: port, script: filepath.Join(repo, "scripts", "cassandra.sh"),
		pidFile: filepath.Join(cache, "cassandra", "node-"+port, "cassandra.pid")}
	if n.run("status") == nil {
		missing(fmt.Sprintf("a Cassandra node already answers on %s; this test stops only a node it started (%s moves it)", port, portVar))
	}
	if _, err := exec.LookPath("java"); err != nil {
		missing("no java to start a Cassandra node of the test's own")
	}
	begin := time.Now()
	if err := n.run("start"); err != nil {
		t.Fatal(err)
	}
	t.Logf("a Cassandra node of the test's own on port %s, started in %v", port, time.Since(begin).Round(time.Second))
	t.Cleanup(func() {
		if err := n.run("reset"); err != nil {
			t.Errorf("stop the test's node: %v", err)
		}
	})
	return n
}

// run runs scripts/cassandra.sh with args on the node's ports.
func (n *cassandraNode) run(args ...string) error {
	cmd := exec.Command(n.script, args...)
	cmd.Env = append(os.Environ(), "CASSANDRA_PORT="+n.port, "CASSANDRA_STORAGE_PORT=", "CASSANDRA_JMX_PORT=",
		"CASSANDRA_HEAP_OPTS=-Xms256m -Xmx512m", "CASSANDRA_JVM_OPTS=-XX:TieredStopAtLevel=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", n.script, strings.Join(args, " "), err, out)
	}
	return nil
}

// pid returns the running node's process id.
func (n *cassandraNode) pid() int {
	n.t.Helper()
	raw, err := os.ReadFile(n.pidFile)
	if err != nil {
		n.t.Fatalf("the node's pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 1 {
		n.t.Fatalf("the node's pid file holds %q", raw)
	}
	return pid
}

// dropKeyspace drops ks on host, if the node still runs.
func dropKeyspace(t *testing.T, host, ks string) {
	c := gocql.NewCluster(host)
	c.Timeout, c.ConnectTimeout = 30*time.Second, 10*time.Second
	sess, err := c.CreateSession()
	if err != nil {
		return // the node is gone, and its data with it
	}
	defer sess.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := sess.Query(`DROP KEYSPACE IF EXISTS ` + ks).WithContext(ctx).Exec(); err != nil {
		t.Logf("drop keyspace %s: %v", ks, err)
	}
}
