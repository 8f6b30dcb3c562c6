package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sync/errgroup"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/cql"
	"github.com/orderd/orderd/internal/relay/kafkatest"
	"github.com/orderd/orderd/internal/store/cqltest"
)

// BenchmarkScaleOut measures what more orderd instances buy on CQL, one
// instance against three, side by side in one run, each instance held to
// the same CPU share by a cgroup (cpu.cfs_quota_us of
// ORDERD_BENCH_CPU cores, default 0.3, per 100 ms period) so that the
// instances and not Cassandra are what limits. Run it once, as root:
//
//	go test -run '^$' -bench ScaleOut -benchtime 1x -timeout 60m ./cmd/orderd
//
// For each size, on a fresh keyspace and fresh topics:
//   - drain: ORDERD_BENCH_BACKLOG orders (default 20,000) are appended by
//     the benchmark itself before any instance runs; then the instances
//     start together, and the rate is the events the projector (rows in
//     the read model) and the relay (creations consumed from Kafka)
//     handled per second from the moment the last instance answered until
//     the backlog was done;
//   - creates and lifecycle: orderd bench, 10 s each, 32 connections spread
//     over the instances;
//   - behind: right after the create burst ends plus 1 s, the orders
//     created that the read model does not hold yet (each would answer
//     503 projection_behind to a GET with its min_version).
//
// ORDERD_BENCH_SIZES (default "1,3") picks the sizes, "1" alone for a
// before/after comparison of one instance. ORDERD_BENCH_RATE, when set,
// sends the create burst at that many creates per second (open loop)
// instead of as fast as answered, so that builds whose command paths
// differ in speed are compared on the same burst.
func BenchmarkScaleOut(b *testing.B) {
	quota := 0.3
	if v := os.Getenv("ORDERD_BENCH_CPU"); v != "" {
		q, err := strconv.ParseFloat(v, 64)
		if err != nil || q <= 0 {
			b.Fatalf("ORDERD_BENCH_CPU=%q: want a number of cores above 0", v)
		}
		quota = q
	}
	backlog := benchCount(b, "ORDERD_BENCH_BACKLOG", 20000, 1)
	brokers := kafkatest.Brokers(b)
	hosts := cqltest.Hosts(b)
	sizes := []int{1, 3}
	if v := os.Getenv("ORDERD_BENCH_SIZES"); v != "" {
		sizes = nil
		for f := range strings.SplitSeq(v, ",") {
			k, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || k < 1 {
				b.Fatalf("ORDERD_BENCH_SIZES=%q: want instance counts such as 1,3", v)
			}
			sizes = append(sizes, k)
		}
	}
	for b.Loop() {
		var rows []scaleRow
		for _, k := range sizes {
			rows = append(rows, scaleOnce(b, hosts, brokers, k, quota, backlog))
		}
		b.Logf("cgroup: %.2f cores per instance (cpu.cfs_quota_us %d of cpu.cfs_period_us 100000); backlog %d orders", quota, int(quota*100000), backlog)
		b.Logf("%-10s %14s %14s %12s %14s %10s", "instances", "projector ev/s", "relay ev/s", "creates/s", "lifecycle op/s", "behind+1s")
		for _, r := range rows {
			b.Logf("%-10d %14.0f %14.0f %12.0f %14.0f %10d", r.instances, r.projector, r.relay, r.creates, r.lifecycle, r.behind)
			b.ReportMetric(float64(r.behind), fmt.Sprintf("behind-%d", r.instances))
		}
		if len(rows) != 2 || rows[0].instances != 1 || rows[1].instances != 3 {
			continue
		}
		one, three := rows[0], rows[1]
		b.ReportMetric(three.projector/one.projector, "projector-3/1")
		b.ReportMetric(three.relay/one.relay, "relay-3/1")
		b.ReportMetric(three.creates/one.creates, "creates-3/1")
		b.ReportMetric(one.projector, "projector-1-ev/s")
		b.ReportMetric(three.projector, "projector-3-ev/s")
		b.ReportMetric(one.relay, "relay-1-ev/s")
		b.ReportMetric(three.relay, "relay-3-ev/s")
	}
}

// scaleRow is one size's figures.
type scaleRow struct {
	instances                            int
	projector, relay, creates, lifecycle float64
	behind                               int64
}

// scaleOnce measures k instances held to quota cores each.
func scaleOnce(b *testing.B, hosts, brokers []string, k int, quota float64, backlog int) scaleRow {
	b.Helper()
	ctx := context.Background()
	keyspace := cqltest.Keyspace(b, hosts)
	orders, customers := kafkatest.Topic(b, brokers, 6), kafkatest.Topic(b, brokers, 1)

	// The backlog, appended before any instance runs.
	st, err := cql.OpenStore(ctx, cql.Config{Hosts: hosts, Keyspace: keyspace, Timeout: cqltest.Timeout,
		Logger: zaptest.NewLogger(b, zaptest.Level(zap.WarnLevel))}, cql.Options{})
	if err != nil {
		b.Fatal(err)
	}
	h := aggregate.NewHandler(st, time.Now)
	cust := uuid.New()
	if _, err := h.RegisterCustomer(ctx, cust, aggregate.Meta{}, "scale-"+uuid.NewString()[:8]+"@example.com", "Scale", "Out", ""); err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	for range backlog {
		g.Go(func() error {
			_, err := h.CreateOrder(gctx, uuid.Must(uuid.NewV7()), aggregate.Meta{}, cust, []aggregate.Item{{ProductID: uuid.New(), Quantity: 1}})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	_ = st.Close()
	b.Logf("%d instance(s): backlog of %d orders appended in %s", k, backlog, time.Since(t0).Round(time.Millisecond))

	// What the relay published: each order's creation, once counted.
	seen := newArrivals()
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	for p := range 6 {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: orders, Partition: p, MinBytes: 1, MaxBytes: 4 << 20, MaxWait: 50 * time.Millisecond})
		defer r.Close()
		go func() {
			for {
				m, err := r.ReadMessage(cctx)
				if err != nil {
					return
				}
				if kafkaHeader(m.Headers, "ce_sequence") == "1" {
					seen.add(string(m.Key))
				}
			}
		}()
	}
	session := scaleSession(b, hosts, keyspace)
	projected := func() int64 {
		var n int64
		if err := session.Query(`SELECT count(*) FROM order_read_model`).Consistency(gocql.One).Scan(&n); err != nil {
			b.Fatalf("count the read model: %v", err)
		}
		return n
	}

	// Each worker drains alone, so that its rate is what the instances'
	// CPU shares give it: run together, the projector and the relay of an
	// instance share its quota, and how the scheduler splits it decides
	// which one finishes first (with one instance the relay took most of
	// it, with three their shares evened out), not what each can do.
	// First the projector: the instances run without Kafka (the relay off).
	env := map[string]string{
		"ORDERD_STORE":           "scylla",
		"ORDERD_SCYLLA_HOSTS":    strings.Join(hosts, ","),
		"ORDERD_SCYLLA_KEYSPACE": keyspace,
		"ORDERD_LOG_LEVEL":       "warn",
		"ORDERD_KEK":             testKEK(b), // both runs' instances share it, as a cluster's must
	}
	c := &cluster{t: b, env: env}
	nodes := startLimited(b, c, fmt.Sprintf("scale-%d-p", k), k, quota)
	row := scaleRow{instances: k}
	row.projector = drain(b, nodes, "projector", backlog, projected)
	for _, n := range nodes {
		n.stop(b)
	}

	// Then the relay, on fresh instances whose projectors find nothing
	// left to do.
	c = &cluster{t: b, env: kafkaEnv(b, brokers,
		"ORDERD_STORE", "scylla",
		"ORDERD_SCYLLA_HOSTS", strings.Join(hosts, ","),
		"ORDERD_SCYLLA_KEYSPACE", keyspace,
		"ORDERD_KAFKA_TOPICS", "Order="+orders+",Customer="+customers,
		"ORDERD_LOG_LEVEL", "warn",
		"ORDERD_KEK", env["ORDERD_KEK"],
	)}
	nodes = startLimited(b, c, fmt.Sprintf("scale-%d-r", k), k, quota)
	row.relay = drain(b, nodes, "relay", backlog, func() int64 { return int64(seen.count()) })

	var addrs []string
	for _, n := range nodes {
		addrs = append(addrs, n.svc.base)
	}
	burst := []string{"-addr", strings.Join(addrs, ","), "-mix", "create", "-duration", "10s", "-connections", "32"}
	if r := os.Getenv("ORDERD_BENCH_RATE"); r != "" {
		burst = append(burst, "-rate", r)
	}
	created := runBenchJSON(b, burst...)
	time.Sleep(time.Second)
	made := int64(backlog) + created.Ops["create"].Count - int64(len(created.Ops["create"].Errors))
	row.behind = max(0, made-projected())
	row.creates = created.Ops["create"].OpsPerSecond
	life := runBenchJSON(b, "-addr", strings.Join(addrs, ","), "-mix", "lifecycle", "-duration", "10s", "-connections", "32")
	row.lifecycle = life.Total.OpsPerSecond
	if errs := created.Ops["create"].Errors; len(errs) > 0 {
		b.Logf("%d instance(s): create errors %v", k, errs)
	}
	for _, n := range nodes {
		n.stop(b)
	}
	return row
}

// limited is an orderd instance held to its CPU share.
type limited struct {
	*node
	cgroup string
	pid    int
}

// startLimited starts k instances of c together, named prefix-a, -b…,
// each in a cgroup of its own that may use quota cores, and returns them
// once all answer.
func startLimited(b *testing.B, c *cluster, prefix string, k int, quota float64) []limited {
	b.Helper()
	out := make([]limited, k)
	var starting sync.WaitGroup
	for i := range k {
		starting.Go(func() {
			n := c.start(fmt.Sprintf("%s-%c", prefix, 'a'+i))
			pid := n.proc.cmd.Process.Pid
			out[i] = limited{node: n, pid: pid, cgroup: limitCPU(b, fmt.Sprintf("%s-%d", n.id, pid), pid, quota)}
		})
	}
	starting.Wait()
	for _, l := range out {
		if l.node == nil {
			b.FailNow() // an instance did not start: c.start said why
		}
	}
	return out
}

// stop ends the instance with SIGTERM, so that it gives its leases up
// and leaves the members, and waits for it to exit.
func (l limited) stop(b *testing.B) {
	b.Helper()
	if err := l.proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.proc.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		b.Fatalf("%s did not exit within a minute of SIGTERM", l.id)
	}
}

// drain waits until done() reaches backlog and returns the rate from the
// moment the instances answered: backlog events over the time taken
// (what was done by then counts as not done: it is 0 when the instances
// start on a backlog nobody touched). Every 5 s it logs where the drain is
// and how many of worker's shards each instance holds; at the end what
// each instance used of its CPU share.
func drain(b *testing.B, nodes []limited, worker string, backlog int, done func() int64) float64 {
	b.Helper()
	up := time.Now()
	use0 := cgroupUse(b, nodes)
	at0 := done()
	logged := up
	for done() < int64(backlog) {
		time.Sleep(250 * time.Millisecond)
		now := time.Now()
		if now.Sub(up) > 20*time.Minute {
			b.Fatalf("%d instance(s): after 20 minutes the %s has done %d of %d", len(nodes), worker, done(), backlog)
		}
		if now.Sub(logged) >= 5*time.Second {
			logged = now
			var held []string
			for _, n := range nodes {
				held = append(held, fmt.Sprintf("%s %d", n.id, heldCount(n.ready(b).Components[worker])))
			}
			b.Logf("%d instance(s): %s %s: %d done; shards held: %s", len(nodes), worker, now.Sub(up).Round(time.Second), done(), strings.Join(held, ", "))
		}
	}
	took := time.Since(up)
	b.Logf("%d instance(s): the %s drained %d events in %s after the last instance answered (%d were done by then)",
		len(nodes), worker, backlog, took.Round(time.Millisecond), at0)
	for i, u := range cgroupUse(b, nodes) {
		u = u.since(use0[i])
		b.Logf("%d instance(s): %s used %.3f cores over the %s's drain, throttled in %d of %d periods",
			len(nodes), nodes[i].id, u.cpu.Seconds()/took.Seconds(), worker, u.throttled, u.periods)
	}
	return float64(int64(backlog)-at0) / took.Seconds()
}

// heldCount is how many shards an instance's worker holds, -1 when /readyz
// does not say.
func heldCount(c readyzComponent) int {
	if c.Held == nil {
		return -1
	}
	return *c.Held
}

// arrivals counts distinct keys, safe for concurrent use.
type arrivals struct {
	mu   sync.Mutex
	keys map[string]struct{}
}

func newArrivals() *arrivals { return &arrivals{keys: map[string]struct{}{}} }

func (a *arrivals) add(k string) {
	a.mu.Lock()
	a.keys[k] = struct{}{}
	a.mu.Unlock()
}

func (a *arrivals) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.keys)
}

// scaleSession opens a plain session on keyspace for counting rows.
func scaleSession(b *testing.B, hosts []string, keyspace string) *gocql.Session {
	b.Helper()
	cc := gocql.NewCluster(hosts...)
	cc.Keyspace = keyspace
	cc.Timeout, cc.ConnectTimeout = cqltest.Timeout, cqltest.Timeout
	cc.Logger = log.New(io.Discard, "", 0) // not a warning per count(*) without a partition key
	s, err := cc.CreateSession()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	return s
}

// cgroupCPU is where the benchmark makes its cgroups (cgroup v1's cpu
// controller, as on the development machine).
const cgroupCPU = "/sys/fs/cgroup/cpu"

// limitCPU moves process pid into a new cgroup name that may use quota
// cores, returns the cgroup's directory, and removes the cgroup when the
// benchmark ends (after the process is gone).
func limitCPU(b *testing.B, name string, pid int, quota float64) string {
	b.Helper()
	dir := filepath.Join(cgroupCPU, "orderd-bench", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatalf("make the cgroup (run as root, with cgroup v1's cpu controller at %s): %v", cgroupCPU, err)
	}
	for file, value := range map[string]string{
		"cpu.cfs_period_us": "100000",
		"cpu.cfs_quota_us":  strconv.Itoa(int(quota * 100000)),
	} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0o644); err != nil {
			b.Fatalf("cgroup %s: %v", file, err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		b.Fatalf("move orderd into its cgroup: %v", err)
	}
	b.Cleanup(func() {
		for range 50 {
			if os.Remove(dir) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	return dir
}

// cpuUse is what an instance used: CPU time and its cgroup quota's
// periods, in all and throttled.
type cpuUse struct {
	cpu                time.Duration
	periods, throttled int64
}

func (u cpuUse) since(v cpuUse) cpuUse {
	return cpuUse{u.cpu - v.cpu, u.periods - v.periods, u.throttled - v.throttled}
}

// cgroupUse reads what each of the instances used so far: its CPU time from /proc (utime + stime, in the
// kernel's 100 Hz ticks), its periods from the cgroup's cpu.stat.
func cgroupUse(b *testing.B, nodes []limited) []cpuUse {
	b.Helper()
	out := make([]cpuUse, len(nodes))
	for i, n := range nodes {
		stat, err := os.ReadFile(filepath.Join(n.cgroup, "cpu.stat"))
		if err != nil {
			b.Fatalf("cgroup: %v", err)
		}
		for _, line := range strings.Split(string(stat), "\n") {
			f := strings.Fields(line)
			if len(f) != 2 {
				continue
			}
			n, _ := strconv.ParseInt(f[1], 10, 64)
			switch f[0] {
			case "nr_periods":
				out[i].periods = n
			case "nr_throttled":
				out[i].throttled = n
			}
		}
		proc, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n.pid))
		if err != nil {
			b.Fatalf("cgroup: %v", err)
		}
		// The fields after the command's name, which is in parentheses:
		// utime and stime are the 12th and 13th of them.
		f := strings.Fields(string(proc[bytes.LastIndexByte(proc, ')')+1:]))
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		out[i].cpu = time.Duration(ut+st) * 10 * time.Millisecond
	}
	return out
}

// benchCount is the whole number the environment variable name sets for a
// benchmark, def when it is unset; b fails on a value below least.
func benchCount(b *testing.B, name string, def, least int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < least {
		b.Fatalf("%s=%q: want a whole number, at least %d", name, v, least)
	}
	return n
}
