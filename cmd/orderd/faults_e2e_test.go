package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
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

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/orderd/orderd/internal/relay/kafkatest"
	"github.com/orderd/orderd/internal/store/cqltest"
)

// The tests of this file run three orderd processes on the three-node
// Cassandra cluster (replication factor 3, QUORUM) and the three-broker
// Kafka cluster (replication factor 3, min.insync.replicas 2) that `make
// cluster-test` starts with scripts/cassandra.sh and scripts/kafka.sh
// cluster-start, and break one server or one link under load: a Cassandra
// node or a Kafka broker killed with SIGKILL, the instance of an active
// worker cut off from Cassandra or from Kafka (network namespaces, see
// netns). The servers are found through the scripts' variables
// (cqltest.Cluster, kafkatest.Cluster); a killed server is started again
// with the same script, so the next test finds the clusters whole.

// clusterLeaseTTL is the lease TTL of the fault tests' orderd: short, so
// that a takeover comes quickly.
const clusterLeaseTTL = 3 * time.Second

// failoverBound is the documented bound on a takeover after the holder
// dies or is cut off (docs/cluster.md: TTL + TTL/3 + 2 s for the shards of
// a split worker, whose new holders wait for the dead one's heartbeat to
// expire as well, a second more than a whole worker's lease), with slack
// for a 2-core machine that runs six JVMs and three orderd processes
// besides the test: /readyz is polled, and a loaded node answers late.
var failoverBound = clusterLeaseTTL + clusterLeaseTTL/3 + 2*time.Second + 4*time.Second

// faultEnv is the environment of orderd on both clusters, in a keyspace
// and under a topic prefix of the test's own (orderd creates the topics,
// with the replication factor of three brokers).
func faultEnv(t *testing.T) (env map[string]string, hosts, brokers []string) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: runs three orderd processes on the server clusters")
	}
	hosts = cqltest.Cluster(t)
	brokers = kafkatest.Cluster(t)
	ks := "orderd_faults_" + randomHex(t, 6)
	t.Cleanup(func() { dropKeyspace(t, hosts[0], ks) })
	env = kafkaEnv(t, brokers,
		"ORDERD_STORE", "scylla",
		"ORDERD_SCYLLA_HOSTS", strings.Join(hosts, ","),
		"ORDERD_SCYLLA_KEYSPACE", ks,
		"ORDERD_SCYLLA_REPLICATION", cqltest.ClusterReplication,
		"ORDERD_SCYLLA_CONSISTENCY", "QUORUM",
		"ORDERD_SCYLLA_SERIAL_CONSISTENCY", "SERIAL",
		"ORDERD_LEASE_TTL", clusterLeaseTTL.String(),
		// Eight shards, not the default 64: the failovers move several
		// shards each, while the lease renewals of 3 instances × 2 workers
		// × 64 shards every TTL/3 would be hundreds of Paxos rounds a
		// second on three Cassandra nodes sharing two cores.
		"ORDERD_SHARDS", "8",
		"ORDERD_RECONCILE_INTERVAL", "2s",
		"ORDERD_READ_WAIT", "20s",
		// One key-encryption key for the three instances: each reads the
		// personal data the others sealed.
		"ORDERD_KEK", randomHex(t, 32),
	)
	return env, hosts, brokers
}

// script runs scripts/NAME.sh with args and extra environment, and
// returns its output.
func script(t *testing.T, name string, env []string, args ...string) (string, error) {
	t.Helper()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(repo, "scripts", name+".sh"), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("scripts/%s.sh %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// killServer kills the cluster member at addr (host:port) of scripts/NAME.sh
// (cassandra or kafka) with SIGKILL, its pid from the script.
func killServer(t *testing.T, name, addr string) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	v := strings.ToUpper(name)
	out, err := script(t, name, []string{v + "_HOST=" + host, v + "_PORT=" + port}, "pid")
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil || pid <= 1 {
		t.Fatalf("the pid of %s on %s: %q", name, addr, out)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %s on %s (pid %d): %v", name, addr, pid, err)
	}
}

// restartCluster starts the killed members of scripts/NAME.sh's cluster
// again (cluster-start leaves the running ones alone) and returns how long
// that took. It runs at cleanup too, so that a failed test leaves the
// clusters whole for the next.
func restartCluster(t *testing.T, name string) time.Duration {
	t.Helper()
	start := time.Now()
	if _, err := script(t, name, nil, "cluster-start"); err != nil {
		t.Error(err)
	}
	return time.Since(start)
}

// faultLoad is clients sending order lifecycles and customer
// registrations to the nodes that target names, while one reader polls the
// read models: what each was told, and what went wrong.
type faultLoad struct {
	target func(i int) *node
	nodes  []*node // the nodes target names, whose logs explain a wrong answer

	mu      sync.Mutex
	acks    []acked
	ackedAt []time.Time
	sentAt  []time.Time               // when the command of acks[i] was sent
	answers map[string]map[string]int // node id -> outcome ("201", "503", "timeout", ...) -> count
	wrong   []string                  // answers a client must never get: 5xx but 503 with Retry-After
	exempt  string                    // a node whose 5xx are counted only: one cut off from the store

	seen    map[uuid.UUID]int64 // the highest order version a GET returned
	older   []string            // GETs that returned an older row than an earlier GET
	reads   int
	cancel  context.CancelFunc
	workers sync.WaitGroup
}

// run starts workers clients and the reader; stop ends them.
func (l *faultLoad) run(workers int) {
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	l.answers = map[string]map[string]int{}
	l.seen = map[uuid.UUID]int64{}
	for w := range workers {
		l.workers.Go(func() { l.client(ctx, w) })
	}
	l.workers.Go(func() { l.reader(ctx) })
}

func (l *faultLoad) stop() {
	l.cancel()
	l.workers.Wait()
}

// command sends one command to n; ok when it was acknowledged (2xx).
func (l *faultLoad) command(ctx context.Context, client *http.Client, n *node, method, path, body string) (commandResult, bool) {
	req, _ := http.NewRequestWithContext(ctx, method, n.svc.base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	outcome := ""
	var res commandResult
	ok := false
	switch {
	case ctx.Err() != nil:
		return res, false // the load stopped
	case err != nil:
		outcome = "error"
		if ne, isNet := err.(interface{ Timeout() bool }); isNet && ne.Timeout() {
			outcome = "timeout"
		}
	default:
		outcome = strconv.Itoa(resp.StatusCode)
		ok = resp.StatusCode/100 == 2 && json.NewDecoder(resp.Body).Decode(&res) == nil
		if resp.StatusCode >= 500 && (resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "") {
			var b strings.Builder
			_, _ = fmt.Fprintf(&b, "%s %s on %s: %d", method, path, n.id, resp.StatusCode)
			buf := make([]byte, 300)
			k, _ := resp.Body.Read(buf)
			b.Write(buf[:k])
			l.mu.Lock()
			if n.id != l.exempt {
				l.wrong = append(l.wrong, b.String())
			}
			l.mu.Unlock()
		}
		resp.Body.Close()
	}
	l.mu.Lock()
	if l.answers[n.id] == nil {
		l.answers[n.id] = map[string]int{}
	}
	l.answers[n.id][outcome]++
	l.mu.Unlock()
	return res, ok
}

func (l *faultLoad) record(a acked, sent time.Time) {
	l.mu.Lock()
	l.acks = append(l.acks, a)
	l.ackedAt = append(l.ackedAt, time.Now())
	l.sentAt = append(l.sentAt, sent)
	l.mu.Unlock()
}

// sentAfter returns, for each aggregate, the lowest version acknowledged
// to a command sent after at: that event was appended after at.
func (l *faultLoad) sentAfter(at time.Time) map[uuid.UUID]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[uuid.UUID]int64{}
	for i, a := range l.acks {
		if l.sentAt[i].After(at) && (out[a.id] == 0 || a.version < out[a.id]) {
			out[a.id] = a.version
		}
	}
	return out
}

// client registers a customer and takes an order through its lifecycle,
// each command on the next node that target names, until ctx ends.
func (l *faultLoad) client(ctx context.Context, w int) {
	client := &http.Client{Timeout: 15 * time.Second}
	bodies := map[string]string{"/confirm": "", "/ship": `{"tracking_number":"T","carrier":"C"}`, "/deliver": `{"signature":"S"}`}
	for i := 0; ctx.Err() == nil; i++ {
		n := l.target(w + i)
		sent := time.Now()
		cres, ok := l.command(ctx, client, n, "POST", "/v1/customers", fmt.Sprintf(`{"email":"f%d-%d-%s@example.com","first_name":"C","last_name":"L"}`, w, i, uuid.NewString()[:8]))
		if !ok {
			continue
		}
		l.record(acked{cres.ID, "customers", cres.Version, n.id}, sent)
		n = l.target(w + i + 1)
		sent = time.Now()
		ores, ok := l.command(ctx, client, n, "POST", "/v1/orders", fmt.Sprintf(`{"customer_id":%q,"items":[{"product_id":%q,"quantity":2}]}`, cres.ID, uuid.NewString()))
		if !ok {
			continue
		}
		l.record(acked{ores.ID, "orders", ores.Version, n.id}, sent)
		for step, path := range []string{"/confirm", "/ship", "/deliver"} {
			n := l.target(w + i + 2 + step)
			sent := time.Now()
			res, ok := l.command(ctx, client, n, "POST", "/v1/orders/"+ores.ID.String()+path, bodies[path])
			if !ok {
				break
			}
			l.record(acked{res.ID, "orders", res.Version, n.id}, sent)
		}
	}
}

// reader GETs acknowledged orders, one at a time, on the nodes that target
// names: a GET that starts after another one returned version v must not
// return a row older than v, whichever node serves it.
func (l *faultLoad) reader(ctx context.Context) {
	client := &http.Client{Timeout: 15 * time.Second}
	for i := 0; ctx.Err() == nil; i++ {
		l.mu.Lock()
		var id uuid.UUID
		if len(l.acks) > 0 {
			a := l.acks[rand.IntN(len(l.acks))]
			if a.kind == "orders" {
				id = a.id
			}
		}
		l.mu.Unlock()
		if id == uuid.Nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		n := l.target(i)
		req, _ := http.NewRequestWithContext(ctx, "GET", n.svc.base+"/v1/orders/"+id.String(), nil)
		resp, err := client.Do(req)
		if err != nil {
			continue
		}
		var o orderBody
		ok := resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&o) == nil
		resp.Body.Close()
		if !ok {
			continue // not projected yet, or the node cannot serve: not a row
		}
		l.mu.Lock()
		l.reads++
		if o.Version < l.seen[id] {
			l.older = append(l.older, fmt.Sprintf("order %s: version %d on %s after %d", id, o.Version, n.id, l.seen[id]))
		}
		l.seen[id] = max(l.seen[id], o.Version)
		l.mu.Unlock()
	}
}

// ackedBetween counts the commands acknowledged between from and to.
func (l *faultLoad) ackedBetween(from, to time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := 0
	for _, at := range l.ackedAt {
		if at.After(from) && at.Before(to) {
			k++
		}
	}
	return k
}

// check fails the test for any answer a client must never get and any
// read-model row that went back, then checks that every acknowledged
// command is in the read models that on serves and on Kafka: every
// acknowledged event published, first occurrences in sequence order per
// key. relay is the node whose relay lag says when everything is out.
func (l *faultLoad) check(t *testing.T, on, relay *node, brokers []string, prefix string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("answers per node: %v; %d read-model GETs", l.answers, l.reads)
	for _, w := range l.wrong[:min(len(l.wrong), 10)] {
		t.Errorf("a client must never get: %s", w)
		// What the instance logged about it, found by the correlation id.
		if _, after, ok := strings.Cut(w, `"correlation_id":"`); ok {
			id, _, _ := strings.Cut(after, `"`)
			for _, n := range l.nodes {
				for line := range strings.SplitSeq(n.proc.errs.String(), "\n") {
					if id != "" && strings.Contains(line, id) {
						t.Logf("%s logged: %s", n.id, line)
					}
				}
			}
		}
	}
	if len(l.wrong) > 10 {
		t.Errorf("... and %d more", len(l.wrong)-10)
	}
	for _, o := range l.older[:min(len(l.older), 10)] {
		t.Errorf("a read-model row went back: %s", o)
	}
	if l.reads == 0 {
		t.Error("the reader read no row: it tested nothing")
	}

	final := map[uuid.UUID]acked{}
	for _, a := range l.acks {
		if a.version > final[a.id].version {
			final[a.id] = a
		}
	}
	for _, a := range final {
		readAcked(t, on, a)
	}

	waitUntil(t, "the relay has published everything", func() bool {
		v, ok := relay.svc.metrics(t)[`orderd_feed_lag_events{consumer="relay"}`]
		return ok && v == 0
	})
	records := awaitPublished(t, brokers, map[string]string{
		prefix + "order-events": "order-events", prefix + "customer-events": "customer-events"}, final)
	t.Logf("%d commands acknowledged on %d aggregates, all in the read models; %d records on Kafka", len(l.acks), len(final), records)
}

// readAcked reads a's aggregate on n with a's version as min_version: it
// must answer 200 with that version or a later one. A 503 with Retry-After
// (a storage request that timed out on a loaded machine) is retried, for
// up to a minute.
func readAcked(t *testing.T, n *node, a acked) {
	t.Helper()
	path := fmt.Sprintf("/v1/%s/%s?min_version=%d", a.kind, a.id, a.version)
	deadline := time.Now().Add(time.Minute)
	for {
		r := n.svc.call(t, "GET", path, nil, nil, true)
		if r.Status == http.StatusServiceUnavailable && r.Header.Get("Retry-After") != "" && time.Now().Before(deadline) {
			time.Sleep(500 * time.Millisecond)
			continue
		}
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s on %s (acknowledged by %s): %d %s", path, n.id, a.by, r.Status, r.Body)
		}
		var v struct{ Version int64 }
		r.json(t, &v)
		if v.Version < a.version {
			t.Fatalf("GET %s on %s: version %d, acknowledged %d", path, n.id, v.Version, a.version)
		}
		return
	}
}

// TestCassandraNodeKilledE2E kills one node of the three-node Cassandra
// cluster with SIGKILL while clients send commands to three orderd
// processes, and starts it again 15 s later. With replication factor 3
// QUORUM and SERIAL hold on two nodes: commands are acknowledged while the
// node is down, no client gets a 500 (only 2xx, 4xx, or 503 with
// Retry-After), no read-model row goes back, and every acknowledged command
// is in the read models and on Kafka in order per key.
func TestCassandraNodeKilledE2E(t *testing.T) {
	env, hosts, brokers := faultEnv(t)
	t.Cleanup(func() { restartCluster(t, "cassandra") })
	c := &cluster{t: t, env: env}
	nodes := startFaultCluster(t, c)
	l := &faultLoad{nodes: nodes, target: func(i int) *node { return nodes[i%len(nodes)] }}
	l.run(6)
	defer l.stop()

	time.Sleep(3 * time.Second)
	victim := hosts[len(hosts)-1]
	killedAt := time.Now()
	killServer(t, "cassandra", victim)
	time.Sleep(15 * time.Second)
	restartedAt := time.Now()
	took := restartCluster(t, "cassandra")
	time.Sleep(3 * time.Second)
	l.stop()

	during := l.ackedBetween(killedAt.Add(2*time.Second), restartedAt)
	t.Logf("Cassandra node %s killed for %s: %d commands acknowledged meanwhile; it answered again %s after its restart began",
		victim, restartedAt.Sub(killedAt).Round(time.Millisecond), during, took.Round(time.Millisecond))
	if during == 0 {
		t.Error("no command was acknowledged while one of three nodes was down: QUORUM did not hold")
	}
	l.check(t, nodes[0], c.active("relay", 30*time.Second), brokers, env["ORDERD_KAFKA_TOPIC_PREFIX"])
}

// TestKafkaBrokerKilledE2E kills, with SIGKILL, the Kafka broker that leads
// the first partition of the order topic while clients send commands to
// three orderd processes, and starts it again 15 s later. With replication
// factor 3, min.insync.replicas 2 and acks=all nothing acknowledged is
// lost: every acknowledged command's event is on Kafka, first occurrences
// in sequence order per key, and every read model answers.
func TestKafkaBrokerKilledE2E(t *testing.T) {
	env, _, brokers := faultEnv(t)
	t.Cleanup(func() { restartCluster(t, "kafka") })
	c := &cluster{t: t, env: env}
	nodes := startFaultCluster(t, c)
	l := &faultLoad{nodes: nodes, target: func(i int) *node { return nodes[i%len(nodes)] }}
	l.run(6)
	defer l.stop()

	prefix := env["ORDERD_KAFKA_TOPIC_PREFIX"]
	waitUntil(t, "orderd created its topics", func() bool {
		return len(topicsWithPrefix(t, brokers[0], prefix)) == 2
	})
	for _, name := range []string{"order-events", "customer-events"} {
		if r := replicas(t, brokers, prefix+name); r != 3 {
			t.Fatalf("%s%s has %d replicas per partition, want 3: a killed leader would take its partitions' records with it", prefix, name, r)
		}
	}
	time.Sleep(3 * time.Second)
	victim := partitionLeader(t, brokers, prefix+"order-events", 0)
	killedAt := time.Now()
	killServer(t, "kafka", victim)
	time.Sleep(15 * time.Second)
	restartedAt := time.Now()
	took := restartCluster(t, "kafka")
	time.Sleep(3 * time.Second)
	l.stop()
	t.Logf("Kafka broker %s (leader of %sorder-events/0) killed for %s: %d commands acknowledged meanwhile; it answered again %s after its restart began",
		victim, prefix, restartedAt.Sub(killedAt).Round(time.Millisecond), l.ackedBetween(killedAt, restartedAt), took.Round(time.Millisecond))
	l.check(t, nodes[0], c.active("relay", 30*time.Second), brokers, prefix)
}

// startFaultCluster starts three nodes of c and waits until each worker
// has one active instance that every node names. It gives that 90 s, not
// startCluster's 30: on the loaded three-node Cassandra the first instance
// creates the schema, and the others' first lease attempts wait for it.
func startFaultCluster(t *testing.T, c *cluster) []*node {
	t.Helper()
	var nodes []*node
	for k := range 3 {
		nodes = append(nodes, c.start(fmt.Sprintf("node-%c", 'a'+k)))
	}
	c.active("relay", 90*time.Second)
	c.active("projector", 90*time.Second)
	return nodes
}

// replicas returns the fewest replicas a partition of topic has.
func replicas(t *testing.T, brokers []string, topic string) int {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	md, err := c.Metadata(context.Background(), &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatal(err)
	}
	fewest := -1
	for _, tp := range md.Topics {
		for _, p := range tp.Partitions {
			if fewest < 0 || len(p.Replicas) < fewest {
				fewest = len(p.Replicas)
			}
		}
	}
	return fewest
}

// partitionLeader returns the address of the broker that leads partition p
// of topic.
func partitionLeader(t *testing.T, brokers []string, topic string, p int) string {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	md, err := c.Metadata(context.Background(), &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range md.Topics {
		for _, part := range tp.Partitions {
			if tp.Name == topic && part.ID == p && part.Leader.Host != "" {
				return net.JoinHostPort(part.Leader.Host, strconv.Itoa(part.Leader.Port))
			}
		}
	}
	t.Fatalf("no leader for %s/%d in %+v", topic, p, md.Topics)
	return ""
}
