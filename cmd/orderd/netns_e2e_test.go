package main

import (
	"fmt"
	"math/bits"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
)

// testnet is the network that the partition tests cut: the bridge of
// scripts/testnet.sh, which carries the clusters' addresses in the root
// network namespace, and an orderd per network namespace of its own, on a
// veth pair plugged into the bridge. A cut is a blackhole route in the
// instance's namespace to each address of one cluster: what the instance
// sends there is dropped (a new connection fails at once, an open one
// hears nothing back), while the clients, the other cluster and the other
// instances still reach it. Routes need only iproute2; Debian's iptables
// or nftables are not installed here.
type testnet struct {
	bridge string
	prefix netip.Prefix
}

// nsAddrs hands out the namespaces' addresses, from .100 of the bridge's
// prefix up.
var nsAddrs struct {
	sync.Mutex
	next int
}

// netnsTestnet returns the test network once it is usable: root, ip, the
// bridge up, and every cluster address inside its prefix (not a loopback
// alias, which a namespace cannot reach). Otherwise it skips t, or fails
// it under CI=true.
func netnsTestnet(t *testing.T, clusterAddrs ...[]string) *testnet {
	t.Helper()
	missing := func(format string, args ...any) *testnet {
		msg := fmt.Sprintf(format, args...) + "; the partition tests need root, iproute2 and scripts/testnet.sh up, with the clusters on its addresses (make cluster-test)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
		return nil
	}
	if os.Geteuid() != 0 {
		return missing("not root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return missing("no ip command")
	}
	n := &testnet{bridge: os.Getenv("ORDERD_TESTNET_BRIDGE")}
	if n.bridge == "" {
		n.bridge = "orderd-br0"
	}
	gw := os.Getenv("ORDERD_TESTNET_GATEWAY")
	if gw == "" {
		gw = "10.231.0.1/24"
	}
	p, err := netip.ParsePrefix(gw)
	if err != nil {
		t.Fatalf("ORDERD_TESTNET_GATEWAY %q: %v", gw, err)
	}
	n.prefix = p.Masked()
	iface, err := net.InterfaceByName(n.bridge)
	if err != nil || iface.Flags&net.FlagUp == 0 {
		return missing("no bridge %s up (%v)", n.bridge, err)
	}
	for _, addrs := range clusterAddrs {
		for _, a := range addrs {
			host, _, err := net.SplitHostPort(a)
			ip, perr := netip.ParseAddr(host)
			if err != nil || perr != nil || !n.prefix.Contains(ip) {
				return missing("cluster address %s is not in the bridge's %s", a, n.prefix)
			}
		}
	}
	return n
}

// ipCmd runs ip with args, failing t on an error.
func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// namespace is one network namespace on the bridge.
type namespace struct {
	name string
	addr netip.Addr
}

// namespace makes a network namespace with its loopback up and a veth pair
// to the bridge, with an address of the bridge's prefix; it is deleted
// (with its veth pair) when the test ends.
func (n *testnet) namespace(t *testing.T) *namespace {
	t.Helper()
	nsAddrs.Lock()
	if nsAddrs.next == 0 {
		nsAddrs.next = 100
	}
	a := n.prefix.Addr().As4()
	a[3] = byte(nsAddrs.next)
	nsAddrs.next++
	nsAddrs.Unlock()
	tag := randomHex(t, 3)
	ns := &namespace{name: "orderd-" + tag, addr: netip.AddrFrom4(a)}
	host, peer := "odv"+tag+"h", "odv"+tag+"n"
	ipCmd(t, "netns", "add", ns.name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns.name).Run() })
	ipCmd(t, "link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns.name)
	ipCmd(t, "link", "set", host, "master", n.bridge, "up")
	ipCmd(t, "-n", ns.name, "addr", "add", fmt.Sprintf("%s/%d", ns.addr, n.prefix.Bits()), "dev", peer)
	ipCmd(t, "-n", ns.name, "link", "set", peer, "up")
	ipCmd(t, "-n", ns.name, "link", "set", "lo", "up")
	return ns
}

// cut drops what the namespace sends to each of addrs (host:port), until
// heal.
func (ns *namespace) cut(t *testing.T, addrs []string) {
	t.Helper()
	for _, a := range addrs {
		host, _, _ := net.SplitHostPort(a)
		ipCmd(t, "-n", ns.name, "route", "add", "blackhole", host+"/32")
	}
}

func (ns *namespace) heal(t *testing.T, addrs []string) {
	t.Helper()
	for _, a := range addrs {
		host, _, _ := net.SplitHostPort(a)
		ipCmd(t, "-n", ns.name, "route", "del", "blackhole", host+"/32")
	}
}

// launch returns a cluster's launch function that runs each orderd in a
// namespace of its own, listening on the namespace's address, and the
// namespaces by node id.
func (n *testnet) launch(t *testing.T) (func(id, dir string, env map[string]string) *process, map[string]*namespace) {
	spaces := map[string]*namespace{}
	var mu sync.Mutex
	return func(id, dir string, env map[string]string) *process {
		t.Helper()
		bin, err := binary()
		if err != nil {
			t.Fatal(err)
		}
		ns := n.namespace(t)
		mu.Lock()
		spaces[id] = ns
		mu.Unlock()
		return startCommand(t, exec.Command("ip", "netns", "exec", ns.name, bin,
			"-http-addr", ns.addr.String()+":0", "-data-dir", dir, "-log-level", "info"), env)
	}, spaces
}

// TestCassandraPartitionE2E cuts the instance that runs the active relay
// off from every Cassandra node for 20 s while clients send commands to all
// three instances and a reader polls the read models, then heals the cut.
// Another instance takes over each worker the cut one ran within the
// documented bound (failoverBound); the other instances answer no client
// with a 500; no read-model row goes back; every acknowledged command is in
// the read models and on Kafka, first occurrences in sequence order per key.
func TestCassandraPartitionE2E(t *testing.T) {
	env, hosts, brokers := faultEnv(t)
	tn := netnsTestnet(t, hosts, brokers)
	c := &cluster{t: t, env: env}
	launch, spaces := tn.launch(t)
	c.launch = launch
	nodes := startFaultCluster(t, c)
	l := &faultLoad{nodes: nodes, target: func(i int) *node { return nodes[i%len(nodes)] }}
	l.run(6)
	defer l.stop()

	time.Sleep(3 * time.Second)
	holder, _ := c.holding("relay", 30*time.Second)
	held := []string{"relay"}
	// Split into shards, the relay's busiest node holds projector shards
	// too; whole, the projector may run elsewhere.
	if c.active("projector", 30*time.Second); len(holder.ready(t).Components["projector"].held()) > 0 {
		held = append(held, "projector")
	}
	var others []*node
	for _, n := range nodes {
		if n != holder {
			others = append(others, n)
		}
	}
	l.mu.Lock()
	l.exempt = holder.id // cut off from the store: its answers are counted, not judged here
	l.mu.Unlock()
	lapsed := holder.ready(t).Components
	cutAt := time.Now()
	spaces[holder.id].cut(t, hosts)
	healed := false
	defer func() {
		if !healed {
			spaces[holder.id].heal(t, hosts)
		}
	}()
	failovers := map[string]time.Duration{}
	takeovers := map[string]takeover{}
	for _, w := range held {
		successor := activeAmong(t, w, others, 60*time.Second)
		failovers[w] = time.Since(cutAt)
		takeovers[w] = newTakeover(t, w, lapsed[w], others, successor)
		t.Logf("%s: %s cut off from Cassandra, %s active after %s", w, holder.id, successor.id, failovers[w].Round(time.Millisecond))
	}
	time.Sleep(20*time.Second - time.Since(cutAt))
	spaces[holder.id].heal(t, hosts)
	healed = true
	healedAt := time.Now()
	waitReady(t, holder.svc, http.StatusOK, 60*time.Second)
	t.Logf("%s ready again %s after the heal", holder.id, time.Since(healedAt).Round(time.Millisecond))
	time.Sleep(3 * time.Second)
	l.stop()

	for w, d := range failovers {
		if d > failoverBound {
			t.Errorf("%s: failover after the cut took %s, over the bound of %s", w, d.Round(time.Millisecond), failoverBound)
		}
	}
	t.Logf("%s, cut off for 20 s of the test, answered %v", holder.id, l.answers[holder.id])
	l.check(t, others[0], c.active("relay", 30*time.Second), brokers, env["ORDERD_KAFKA_TOPIC_PREFIX"])
	for _, tk := range takeovers {
		tk.check(t, l, hosts, env["ORDERD_SCYLLA_KEYSPACE"], holder)
	}
}

// takeover is a worker's leases passing from a lapsed holder to its
// successors: the epochs of each shard the lapsed holder held (shard 0 of
// a worker that is not split), then of its successor's take, and when the
// successors were seen active.
type takeover struct {
	worker         string
	lapsed, epoch  map[int]int64
	shards         int // how many shards the worker is split into, 1 when it is not
	successor      string
	seenActiveFrom time.Time
}

// newTakeover records the successors' epochs for the shards of worker the
// lapsed holder held (its /readyz component before the cut); each must be
// above the lapsed holder's: every take bumps it. successor is the node
// that runs the most of the worker now, for the log.
func newTakeover(t *testing.T, worker string, lapsed readyzComponent, successors []*node, successor *node) takeover {
	t.Helper()
	tk := takeover{worker: worker, lapsed: lapsed.held(), shards: lapsed.shards(), successor: successor.id, seenActiveFrom: time.Now()}
	if len(tk.lapsed) == 0 {
		t.Errorf("%s: the cut holder held no shard of it before the cut", worker)
	}
	tk.epoch = movedFrom(t, worker, tk.lapsed, successors)
	return tk
}

// shardOf is the shard, of n (a power of two), of the aggregate whose
// partition token is token: the top bits of the token (SHARDS.md).
func shardOf(token int64, n int) int {
	if n <= 1 {
		return 0
	}
	return int((uint64(token) ^ (1 << 63)) >> (64 - bits.Len(uint(n-1))))
}

// check asserts that the lapsed holder moved no progress after its
// successor took over: the progress row of the worker's consumer on an
// aggregate that a command sent after the takeover appended to, at that
// command's version or later, carries a later epoch than the lapsed
// holder's. It fails when no row carries an epoch at all, which would
// test nothing.
func (tk takeover) check(t *testing.T, l *faultLoad, hosts []string, ks string, holder *node) {
	t.Helper()
	after := l.sentAfter(tk.seenActiveFrom)
	c := gocql.NewCluster(hosts...)
	c.Keyspace = ks
	c.Consistency = gocql.Quorum
	c.Timeout, c.ConnectTimeout = 30*time.Second, 10*time.Second
	sess, err := c.CreateSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	iter := sess.Query(`SELECT token(aggregate_id), aggregate_id, consumer, version, epoch FROM feed_progress`).Iter()
	var (
		token            int64
		id               gocql.UUID
		consumer         string
		version          int64
		epoch            *int64
		fenced, checked  int
		lapsedLate, rows int
	)
	for iter.Scan(&token, &id, &consumer, &version, &epoch) {
		if consumer != tk.worker {
			continue
		}
		lapsed, moved := tk.lapsed[shardOf(token, tk.shards)]
		if !moved {
			continue // a shard the cut holder did not hold: its epochs are its own
		}
		rows++
		if epoch == nil {
			continue
		}
		fenced++
		first, touched := after[uuid.UUID(id)]
		if !touched || version < first {
			continue
		}
		checked++
		if *epoch <= lapsed {
			lapsedLate++
			if lapsedLate <= 5 {
				t.Errorf("%s: progress on %s at version %d, appended after the takeover from epoch %d, was saved at epoch %d by the lapsed holder %s",
					tk.worker, id, version, lapsed, *epoch, holder.id)
			}
		}
	}
	if err := iter.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d progress rows, %d with an epoch, %d moved past an event appended after the takeover: %d of them by the lapsed holder (epochs by shard %v; successors' %v); the lapsed holder's fenced count %d",
		tk.worker, rows, fenced, checked, lapsedLate, tk.lapsed, tk.epoch, holder.ready(t).Components[tk.worker].Fenced)
	if checked == 0 {
		t.Errorf("%s: no progress row moved past an event appended after the takeover: the epoch check tested nothing", tk.worker)
	}
}

// relayStepDownBound bounds how long after it is cut off from Kafka the
// active relay gives up its lease and another instance, which reaches
// Kafka, runs the relay: -relay-step-down (auto: 3 × the lease TTL) with
// no publish succeeding, then a takeover within failoverBound.
var relayStepDownBound = 3*clusterLeaseTTL + failoverBound

// TestKafkaPartitionE2E cuts the instance that runs the active relay off
// from every Kafka broker for 30 s while clients send commands to all three
// instances, then heals the cut. The cut relay gives up its lease and
// another instance takes the relay over within relayStepDownBound, so
// publishing goes on; no instance answers a client with a 500 (all reach
// Cassandra); no read-model row goes back; every acknowledged command is
// in the read models and on Kafka, first occurrences in sequence order per
// key.
func TestKafkaPartitionE2E(t *testing.T) {
	env, hosts, brokers := faultEnv(t)
	tn := netnsTestnet(t, hosts, brokers)
	c := &cluster{t: t, env: env}
	launch, spaces := tn.launch(t)
	c.launch = launch
	nodes := startFaultCluster(t, c)
	l := &faultLoad{nodes: nodes, target: func(i int) *node { return nodes[i%len(nodes)] }}
	l.run(6)
	defer l.stop()

	time.Sleep(3 * time.Second)
	holder, lapsed := c.holding("relay", 30*time.Second)
	var others []*node
	for _, n := range nodes {
		if n != holder {
			others = append(others, n)
		}
	}
	cutAt := time.Now()
	spaces[holder.id].cut(t, brokers)
	healed := false
	defer func() {
		if !healed {
			spaces[holder.id].heal(t, brokers)
		}
	}()
	successor := activeAmong(t, "relay", others, relayStepDownBound)
	failover := time.Since(cutAt)
	tk := newTakeover(t, "relay", lapsed, others, successor)
	t.Logf("relay: %s cut off from Kafka, %s active after %s", holder.id, successor.id, failover.Round(time.Millisecond))
	time.Sleep(30*time.Second - time.Since(cutAt))
	spaces[holder.id].heal(t, brokers)
	healed = true
	time.Sleep(3 * time.Second)
	l.stop()
	l.check(t, others[0], c.active("relay", 30*time.Second), brokers, env["ORDERD_KAFKA_TOPIC_PREFIX"])
	tk.check(t, l, hosts, env["ORDERD_SCYLLA_KEYSPACE"], holder)
}
