package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/orderd/orderd/internal/api/apitest"
	"github.com/orderd/orderd/internal/relay/kafkatest"
	"github.com/orderd/orderd/internal/store/cqltest"
	"github.com/orderd/orderd/internal/worker"
)

// node is one orderd process of a cluster test.
type node struct {
	id   string
	dir  string
	proc *process
	svc  *service
	dead bool
}

// cluster is orderd as several stateless processes on one keyspace.
type cluster struct {
	t     testing.TB
	env   map[string]string
	mu    sync.Mutex
	nodes []*node
	// launch starts one node's process; nil: startProcess, on loopback.
	launch func(id, dir string, env map[string]string) *process
}

func (c *cluster) start(id string) *node {
	c.t.Helper()
	env := map[string]string{"ORDERD_INSTANCE_ID": id}
	c.mu.Lock()
	if c.env["ORDERD_KEK"] == "" && c.env["ORDERD_KEK_FILE"] == "" {
		// The nodes share one key-encryption key, as a cluster must.
		c.env["ORDERD_KEK"] = testKEK(c.t)
	}
	for k, v := range c.env {
		env[k] = v
	}
	c.mu.Unlock()
	dir := c.t.TempDir()
	var p *process
	if c.launch != nil {
		p = c.launch(id, dir, env)
	} else {
		p = startProcess(c.t, dir, env)
	}
	n := &node{id: id, dir: dir, proc: p, svc: &service{t: c.t, base: p.base, dataDir: dir,
		router: apitest.Contract(c.t, p.base), http: &http.Client{Timeout: 30 * time.Second}}}
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	return n
}

// alive returns the nodes not killed, in start order.
func (c *cluster) alive() []*node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*node
	for _, n := range c.nodes {
		if !n.dead {
			out = append(out, n)
		}
	}
	return out
}

func (c *cluster) kill(n *node) {
	c.t.Helper()
	c.mu.Lock()
	n.dead = true
	c.mu.Unlock()
	if err := n.proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		c.t.Fatal(err)
	}
	_ = n.proc.cmd.Wait()
}

type readyzBody struct {
	Status     string
	Components map[string]readyzComponent
}

// readyzComponent is a component of /readyz as the tests read it.
type readyzComponent struct {
	Status, Detail, Role, Active string
	Lag                          *int64
	Epoch, Fenced                int64 // the lease epoch of this instance's last take; its runs a fence ended
	// Of a worker split into shards (worker.Balanced): how many this
	// instance holds, and every shard with its holder as its balancer saw
	// it (Here: this instance holds it now, at Epoch).
	Held   *int
	Shards []struct {
		Shard  int
		Holder string
		Epoch  int64
		Here   bool
	}
}

// held returns the shards this instance holds now, each with the epoch of
// its take: of a worker that is not split, shard 0 while it is active.
func (c readyzComponent) held() map[int]int64 {
	out := map[int]int64{}
	if c.Shards == nil {
		if c.Role == worker.RoleActive {
			out[0] = c.Epoch
		}
		return out
	}
	for _, sh := range c.Shards {
		if sh.Here {
			out[sh.Shard] = sh.Epoch
		}
	}
	return out
}

// shards returns how many shards the worker is split into: 1 when it is
// not.
func (c readyzComponent) shards() int { return max(1, len(c.Shards)) }

func (n *node) ready(t testing.TB) readyzBody {
	var r readyzBody
	n.svc.call(t, "GET", "/readyz", nil, nil, true).json(t, &r)
	return r
}

// active waits until the living nodes run the worker name between them
// (see activeAmong), and returns the one that runs the most of it.
func (c *cluster) active(name string, within time.Duration) *node {
	c.t.Helper()
	return activeAmong(c.t, name, c.alive(), within)
}

// holding returns the node that runs the most of worker name (c.active)
// and its /readyz component, read after, once that shows it holding some
// of the worker: the tests that cut the holder off need one that holds
// something when they cut. (3 s after the start the shards may still move:
// CI13 read the busiest node's /readyz a moment after and found it holding
// none.)
func (c *cluster) holding(name string, within time.Duration) (*node, readyzComponent) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		n := c.active(name, within)
		comp := n.ready(c.t).Components[name]
		if len(comp.held()) > 0 {
			return n, comp
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: the node running the most of it, %s, holds none of it by its own /readyz (%+v)", name, n.id, comp)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// activeAmong waits until nodes run the worker name between them, and
// returns the one that runs the most of it. Of a worker that is not
// split: exactly one of nodes runs it and all of nodes name it as the
// active one. Of a worker split into shards: every shard is held by
// exactly one of nodes, as each node's own leases say (what the
// balancers' views say may lag behind); the one holding the most shards
// (the lowest id among equals) is returned. It ignores the other nodes,
// such as one cut off from the store, whose /readyz may be late or stale.
func activeAmong(t testing.TB, name string, nodes []*node, within time.Duration) *node {
	t.Helper()
	deadline := time.Now().Add(within)
	doubled := map[int]time.Time{} // shard → when two nodes first both showed it
	for {
		var (
			actives []*node
			most    *node
			mostN   int
			count   int
		)
		names := map[string]bool{}
		holders := map[int][]string{}
		for _, n := range nodes {
			comp := n.ready(t).Components[name]
			if comp.Role == worker.RoleActive {
				actives = append(actives, n)
			}
			names[comp.Active] = true
			held := comp.held()
			for sh := range held {
				holders[sh] = append(holders[sh], n.id)
			}
			if len(held) > mostN || len(held) == mostN && most != nil && n.id < most.id {
				most, mostN = n, len(held)
			}
			count = max(count, comp.shards())
		}
		if count == 1 && len(actives) == 1 && len(names) == 1 && names[actives[0].id] {
			return actives[0]
		}
		// The nodes are read one after another, so a shard handed over
		// between two reads shows with both: only an overlap that lasts
		// is two holders at once (a handover takes milliseconds; a lease
		// can only be taken after its holder's deadline).
		once := 0
		for sh, hs := range holders {
			if len(hs) > 1 {
				if since, ok := doubled[sh]; !ok {
					doubled[sh] = time.Now()
				} else if time.Since(since) > 2*time.Second {
					t.Fatalf("%s: shard %d held by %v at once, seen so for %s", name, sh, hs, time.Since(since).Round(time.Millisecond))
				}
				continue
			}
			once++
		}
		for sh := range doubled {
			if len(holders[sh]) < 2 {
				delete(doubled, sh)
			}
		}
		if count > 1 && once == count {
			return most
		}
		if time.Now().After(deadline) {
			ids := []string{}
			for _, n := range actives {
				ids = append(ids, n.id)
			}
			slices.Sort(ids)
			t.Fatalf("%s not run by %d nodes between them within %s (%v say active; they name %v; %d of %d shards held)",
				name, len(nodes), within, ids, names, once, count)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// movedFrom asserts that every shard of the worker name that lapsed (a
// stopped or cut-off node's held shards, with their epochs) is held now by
// one of nodes at a later epoch: every take bumps it. It returns the
// shards' new epochs.
func movedFrom(t testing.TB, name string, lapsed map[int]int64, nodes []*node) map[int]int64 {
	t.Helper()
	now := map[int]int64{}
	for _, n := range nodes {
		for sh, e := range n.ready(t).Components[name].held() {
			now[sh] = e
		}
	}
	for sh, e := range lapsed {
		switch got, ok := now[sh]; {
		case !ok:
			t.Errorf("%s: shard %d, held at epoch %d by the node that is gone, is held by none of the others", name, sh, e)
		case got <= e:
			t.Errorf("%s: shard %d moved at epoch %d, the node that is gone held it at %d: a take must bump the epoch", name, sh, got, e)
		}
	}
	return now
}

// acked is what a client was told: the aggregate's version after its
// command, and the node that took it.
type acked struct {
	id      uuid.UUID
	kind    string // "orders" or "customers"
	version int64
	by      string
}

// TestClusterOnCassandra runs three orderd processes on one Cassandra
// keyspace with Kafka: dead letters are listed and replayed through a node
// that is not the active relay; commands are spread over all three while
// the active relay's node and then the active projector's node are killed
// with SIGKILL; a standby takes over each worker; reads with min_version on
// nodes that did not take the command see it; every acknowledged event is
// on Kafka, first occurrences in sequence order per key; and no node wrote
// anything to its data dir.
func TestClusterOnCassandra(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three orderd processes")
	}
	brokers := kafkatest.Brokers(t)
	hosts := cqltest.Hosts(t)
	orders := kafkatest.Topic(t, brokers, 3, kafka.ConfigEntry{ConfigName: "max.message.bytes", ConfigValue: "4096"})
	customers := kafkatest.Topic(t, brokers, 1)
	c := &cluster{t: t, env: kafkaEnv(t, brokers,
		"ORDERD_STORE", "scylla",
		"ORDERD_SCYLLA_HOSTS", strings.Join(hosts, ","),
		"ORDERD_SCYLLA_KEYSPACE", cqltest.Keyspace(t, hosts),
		"ORDERD_KAFKA_TOPICS", "Order="+orders+",Customer="+customers,
		"ORDERD_ADMIN_TOKEN", "s3cret",
		"ORDERD_LEASE_TTL", "3s",
		"ORDERD_RECONCILE_INTERVAL", "2s",
		"ORDERD_READ_WAIT", "20s",
	)}
	startCluster(t, c, 3)
	relayNode := c.active("relay", 30*time.Second)

	// A dead letter written by the active relay, seen and replayed
	// through another node.
	var other *node
	for _, n := range c.alive() {
		if n != relayNode {
			other = n
			break
		}
	}
	cust := other.svc.registerCustomer(t, "cluster@example.com")
	var lines []itemBody // about 6 KB of JSON: over the topic's 4 KB limit
	for range 100 {
		lines = append(lines, itemBody{uuid.NewString(), 1})
	}
	big := other.svc.createOrder(t, cust.ID, lines...)
	auth := []string{"Authorization", "Bearer s3cret"}
	var list struct {
		DeadLetters []struct {
			ID          int64     `json:"id"`
			AggregateID uuid.UUID `json:"aggregate_id"`
			State       string
		} `json:"dead_letters"`
	}
	waitUntil(t, "the big order is dead-lettered", func() bool {
		other.svc.do(t, "GET", "/v1/admin/dlq", nil, http.StatusOK, auth...).json(t, &list)
		return len(list.DeadLetters) == 1
	})
	if l := list.DeadLetters[0]; l.AggregateID != big.ID || l.State != "failed" {
		t.Fatalf("dead letter %+v, want the big order's creation, failed", l)
	}
	kafkatest.AlterTopic(t, brokers, orders, "max.message.bytes", "1048588")
	var replayed struct{ Published int }
	other.svc.do(t, "POST", "/v1/admin/dlq/"+strconv.FormatInt(list.DeadLetters[0].ID, 10)+"/replay", nil, http.StatusOK, auth...).json(t, &replayed)
	if replayed.Published != 1 {
		t.Fatalf("replay through %s published %d events, want 1", other.id, replayed.Published)
	}

	// The load: customers and order lifecycles spread over the nodes, each
	// command read back with min_version on a node that did not take it,
	// while two nodes are killed.
	var (
		mu    sync.Mutex
		acks  = []acked{{cust.ID, "customers", cust.Version, other.id}, {big.ID, "orders", big.Version, other.id}}
		reads []time.Duration
	)
	record := func(a acked) {
		mu.Lock()
		acks = append(acks, a)
		mu.Unlock()
	}
	ctx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			client := &http.Client{Timeout: 30 * time.Second}
			pick := func(i int) *node {
				nodes := c.alive()
				return nodes[(w+i)%len(nodes)]
			}
			command := func(n *node, method, path, body string) (commandResult, bool) {
				req, _ := http.NewRequestWithContext(ctx, method, n.svc.base+path, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					return commandResult{}, false // the node died: not acknowledged
				}
				defer resp.Body.Close()
				var res commandResult
				if resp.StatusCode/100 != 2 || json.NewDecoder(resp.Body).Decode(&res) != nil {
					return commandResult{}, false
				}
				return res, true
			}
			readBack := func(took *node, kind string, res commandResult) {
				for _, n := range c.alive() {
					if n == took {
						continue
					}
					start := time.Now()
					resp, err := client.Get(fmt.Sprintf("%s/v1/%s/%s?min_version=%d", n.svc.base, kind, res.ID, res.Version))
					if err != nil {
						return // that node died meanwhile
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						t.Errorf("GET %s %s min_version %d on %s (the command went to %s): %d", kind, res.ID, res.Version, n.id, took.id, resp.StatusCode)
					}
					mu.Lock()
					reads = append(reads, time.Since(start))
					mu.Unlock()
					return
				}
			}
			bodies := map[string]string{"/confirm": "", "/ship": `{"tracking_number":"T","carrier":"C"}`, "/deliver": `{"signature":"S"}`}
			for i := 0; ctx.Err() == nil; i++ {
				n := pick(i)
				cres, ok := command(n, "POST", "/v1/customers", fmt.Sprintf(`{"email":"c%d-%d@example.com","first_name":"C","last_name":"L"}`, w, i))
				if !ok {
					continue
				}
				record(acked{cres.ID, "customers", cres.Version, n.id})
				readBack(n, "customers", cres)
				n = pick(i + 1)
				ores, ok := command(n, "POST", "/v1/orders", fmt.Sprintf(`{"customer_id":%q,"items":[{"product_id":%q,"quantity":2}]}`, cres.ID, uuid.NewString()))
				if !ok {
					continue
				}
				record(acked{ores.ID, "orders", ores.Version, n.id})
				readBack(n, "orders", ores)
				for step, path := range []string{"/confirm", "/ship", "/deliver"} {
					n := pick(i + 2 + step)
					res, ok := command(n, "POST", "/v1/orders/"+ores.ID.String()+path, bodies[path])
					if !ok {
						break
					}
					record(acked{res.ID, "orders", res.Version, n.id})
					readBack(n, "orders", res)
				}
			}
		})
	}

	time.Sleep(3 * time.Second)
	relayNode = c.active("relay", 30*time.Second)
	lapsedRelay := relayNode.ready(t).Components["relay"].held()
	killedAt := time.Now()
	c.kill(relayNode)
	newRelay := c.active("relay", 30*time.Second)
	relayFailover := time.Since(killedAt)
	// The killed node's relay (its shards, when split) runs on the others
	// now, each at a later epoch.
	movedFrom(t, "relay", lapsedRelay, c.alive())

	time.Sleep(2 * time.Second)
	projNode := c.active("projector", 30*time.Second)
	lapsedProj := projNode.ready(t).Components["projector"].held()
	killedAt = time.Now()
	c.kill(projNode)
	survivor := c.active("projector", 30*time.Second)
	projFailover := time.Since(killedAt)
	movedFrom(t, "projector", lapsedProj, c.alive())
	if r := c.active("relay", 30*time.Second); r != survivor {
		t.Fatalf("the relay runs on %s, the projector on %s: the last node should run both", r.id, survivor.id)
	}
	time.Sleep(2 * time.Second)
	stopLoad()
	wg.Wait()
	t.Logf("relay failover after kill -9 of %s: %s (to %s); projector failover after kill -9 of %s: %s (to %s)",
		relayNode.id, relayFailover.Round(time.Millisecond), newRelay.id, projNode.id, projFailover.Round(time.Millisecond), survivor.id)

	// Every acknowledged command is in the read model the survivor serves.
	final := map[uuid.UUID]acked{}
	for _, a := range acks {
		if a.version > final[a.id].version {
			final[a.id] = a
		}
	}
	for _, a := range final {
		if a.kind == "orders" {
			if o := survivor.svc.order(t, a.id, a.version); o.Version < a.version {
				t.Fatalf("order %s at version %d on the survivor, acknowledged %d", a.id, o.Version, a.version)
			}
			continue
		}
		survivor.svc.do(t, "GET", fmt.Sprintf("/v1/customers/%s?min_version=%d", a.id, a.version), nil, http.StatusOK)
	}

	// Every acknowledged event is on Kafka; per key the first occurrences
	// come in sequence order.
	waitUntil(t, "the relay has published everything", func() bool {
		v, ok := survivor.svc.metrics(t)[`orderd_feed_lag_events{consumer="relay"}`]
		return ok && v == 0
	})
	if _, ok := survivor.svc.metrics(t)["orderd_feed_handoffs_dropped_total"]; !ok {
		t.Error("no orderd_feed_handoffs_dropped_total on a CQL instance")
	}
	records := awaitPublished(t, brokers, map[string]string{orders: "order-events", customers: "customer-events"}, final)
	for _, n := range c.nodes {
		entries, err := os.ReadDir(n.dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if len(names) > 0 {
			t.Errorf("%s wrote %v to its data dir on the CQL backend", n.id, names)
		}
	}
	slices.Sort(reads)
	if len(reads) > 0 {
		t.Logf("%d aggregates, %d records on Kafka; min_version reads on another node: p50 %s, p99 %s",
			len(final), records, reads[len(reads)/2].Round(time.Millisecond), reads[len(reads)*99/100].Round(time.Millisecond))
	}
}

// awaitPublished reads the topics until every acknowledged command of
// final is on Kafka, for up to a minute, and returns how many records it
// read the last time; publishedInOrder fails at once on a key whose
// first occurrences come out of sequence order. The relay's lag reading 0 is not enough on its own:
// it is what the last reconciliation passes counted, and a command
// acknowledged after one of them may still be on its way (CI13 read the
// topics once and found a customer acknowledged at the end of the load
// "published through 0").
func awaitPublished(t *testing.T, brokers []string, topics map[string]string, final map[uuid.UUID]acked) int {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		published, records := publishedInOrder(t, brokers, topics)
		var missing []acked
		for _, a := range final {
			if published[a.id] < a.version {
				missing = append(missing, a)
			}
		}
		if len(missing) == 0 {
			return records
		}
		if time.Now().After(deadline) {
			for _, a := range missing[:min(len(missing), 10)] {
				t.Errorf("%s %s: acknowledged version %d (by %s), published through %d a minute after the load", a.kind, a.id, a.version, a.by, published[a.id])
			}
			t.FailNow()
		}
		time.Sleep(time.Second)
	}
}

// publishedInOrder reads every record of topics (each topic with its
// default name, whose channel asyncapi.yaml describes), checks them
// against asyncapi.yaml, and fails t unless each key's first occurrences
// come in sequence order (a duplicate is allowed: at least once). It
// returns the highest sequence published per key, and the number of
// records read.
func publishedInOrder(t *testing.T, brokers []string, topics map[string]string) (map[uuid.UUID]int64, int) {
	t.Helper()
	published := map[uuid.UUID]int64{}
	records := 0
	for topic, name := range topics {
		msgs := consumeAll(t, brokers, topic)
		checkMessages(t, name, msgs)
		for _, m := range msgs {
			records++
			id := uuid.MustParse(string(m.Key))
			seq, _ := strconv.ParseInt(kafkaHeader(m.Headers, "ce_sequence"), 10, 64)
			switch {
			case seq <= published[id]: // a duplicate: allowed
			case seq == published[id]+1:
				published[id] = seq
			default:
				t.Fatalf("key %s: sequence %d first seen after %d", id, seq, published[id])
			}
		}
	}
	return published, records
}

// TestClusterWorkersApart runs an instance that serves only the API
// (-workers none) beside one that runs the workers: the API-only instance
// holds no shard, says so in /readyz, and what it accepts is projected and
// published by the other.
func TestClusterWorkersApart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two orderd processes")
	}
	brokers := kafkatest.Brokers(t)
	hosts := cqltest.Hosts(t)
	orders, customers := kafkatest.Topic(t, brokers, 3), kafkatest.Topic(t, brokers, 1)
	c := &cluster{t: t, env: kafkaEnv(t, brokers,
		"ORDERD_STORE", "scylla",
		"ORDERD_SCYLLA_HOSTS", strings.Join(hosts, ","),
		"ORDERD_SCYLLA_KEYSPACE", cqltest.Keyspace(t, hosts),
		"ORDERD_KAFKA_TOPICS", "Order="+orders+",Customer="+customers,
		"ORDERD_LEASE_TTL", "3s",
		"ORDERD_READ_WAIT", "20s",
	)}
	work := c.start("node-work")
	c.mu.Lock()
	c.env["ORDERD_WORKERS"] = "none"
	c.mu.Unlock()
	api := c.start("node-api")

	for _, name := range []string{"projector", "relay"} {
		if n := activeAmong(t, name, []*node{work}, 30*time.Second); n != work {
			t.Fatalf("%s: run by %s", name, n.id)
		}
		comp := api.ready(t).Components[name]
		if comp.Status != "off" || comp.Held != nil || len(comp.Shards) != 0 || !strings.Contains(comp.Detail, "-workers") {
			t.Errorf("%s on the API-only instance: %+v, want off, holding nothing", name, comp)
		}
		if held := len(work.ready(t).Components[name].held()); held != 64 {
			t.Errorf("%s: the working instance holds %d shards, want all 64 (the default)", name, held)
		}
	}

	cust := api.svc.registerCustomer(t, "apart@example.com")
	created := api.svc.createOrder(t, cust.ID)
	if o := api.svc.order(t, created.ID, created.Version); o.ID != created.ID || o.Version != created.Version {
		t.Errorf("read back through the API-only instance: %+v, want order %s at version %d", o, created.ID, created.Version)
	}
	awaitPublished(t, brokers, map[string]string{orders: "order-events", customers: "customer-events"}, map[uuid.UUID]acked{
		cust.ID:    {id: cust.ID, kind: "customers", version: cust.Version, by: api.id},
		created.ID: {id: created.ID, kind: "orders", version: created.Version, by: api.id},
	})
}
