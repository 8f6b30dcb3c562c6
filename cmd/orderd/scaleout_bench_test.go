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
// For each size:
//   - drain, of each worker alone: k instances that run only the projector
//     (-workers projector), then k that run only the relay, each set on a
//     fresh keyspace (and topics), start and share the worker's shards
//     out; then they are frozen (SIGSTOP), the benchmark appends
//     ORDERD_BENCH_BACKLOG orders (default 20,000) itself, and thaws them
//     (SIGCONT); the rate is the events the worker handled per second from
//     the thaw until the backlog was done (rows in the read model; order
//     creations consumed from Kafka). The instances run with a lease TTL
//     of 30 s (scaleLeaseTTL), so that no lease lapses while they are
//     frozen. So it is the rate of running instances, apart from what an
//     instance costs to start, which the log shows (the CPU time each used
//     until its share was settled);
//   - creates and lifecycle: k instances running both workers, on a fresh
//     keyspace, take orderd bench's create burst and then its lifecycle
//     mix, 10 s each, 32 connections spread over the instances;
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

// scaleLeaseTTL is the instances' lease TTL: long enough that no lease
// lapses while they are frozen for a backlog's append (drain).
const scaleLeaseTTL = 30 * time.Second

// scaleOnce measures k instances held to quota cores each.
func scaleOnce(b *testing.B, hosts, brokers []string, k int, quota float64, backlog int) scaleRow {
	b.Helper()
	kek := testKEK(b)
	row := scaleRow{instances: k}
	env := func(keyspace string, kv ...string) map[string]string {
		e := map[string]string{
			"ORDERD_STORE":           "scylla",
			"ORDERD_SCYLLA_HOSTS":    strings.Join(hosts, ","),
			"ORDERD_SCYLLA_KEYSPACE": keyspace,
			"ORDERD_LOG_LEVEL":       "warn",
			"ORDERD_KEK":             kek,
			"ORDERD_LEASE_TTL":       scaleLeaseTTL.String(),
		}
		for i := 0; i+1 < len(kv); i += 2 {
			e[kv[i]] = kv[i+1]
		}
		return e
	}

	// Each worker drains alone, in instances that run only it
	// (-workers), so that its rate is what the instances' CPU shares give
	// it: run together, an instance's projector and relay share its quota,
	// and how the scheduler splits it decides which one finishes first
	// (with one instance the relay took most of it), not what each can do.
	// First the projector.
	keyspace := cqltest.Keyspace(b, hosts)
	backlogs := newBacklog(b, hosts, keyspace)
	nodes := startLimited(b, &cluster{t: b, env: env(keyspace, "ORDERD_WORKERS", "projector")}, fmt.Sprintf("scale-%d-p", k), k, quota)
	settle(b, nodes, "projector")
	session := scaleSession(b, hosts, keyspace)
	projected := func() int64 {
		var n int64
		if err := session.Query(`SELECT count(*) FROM order_read_model`).Consistency(gocql.One).Scan(&n); err != nil {
			b.Fatalf("count the read model: %v", err)
		}
		return n
	}
	row.projector = drain(b, nodes, "projector", backlog, func() error { return backlogs.append(backlog) }, projected)
	for _, n := range nodes {
		n.stop(b)
	}

	// Then the relay, on a keyspace and topics of its own.
	keyspace = cqltest.Keyspace(b, hosts)
	backlogs = newBacklog(b, hosts, keyspace)
	orders, customers := kafkatest.Topic(b, brokers, 6), kafkatest.Topic(b, brokers, 1)
	seen := newArrivals()
	cctx, stopReading := context.WithCancel(context.Background())
	defer stopReading()
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
	withKafka := func(keyspace string, kv ...string) map[string]string {
		e := kafkaEnv(b, brokers, "ORDERD_KAFKA_TOPICS", "Order="+orders+",Customer="+customers)
		for k, v := range env(keyspace, kv...) {
			e[k] = v
		}
		return e
	}
	nodes = startLimited(b, &cluster{t: b, env: withKafka(keyspace, "ORDERD_WORKERS", "relay")}, fmt.Sprintf("scale-%d-r", k), k, quota)
	settle(b, nodes, "relay")
	row.relay = drain(b, nodes, "relay", backlog, func() error { return backlogs.append(backlog) }, func() int64 { return int64(seen.count()) })
	for _, n := range nodes {
		n.stop(b)
	}

	// Then instances as they run by default (both workers, the default
	// lease TTL) take a burst of creates, on a keyspace of their own, and
	// the lifecycle mix.
	keyspace = cqltest.Keyspace(b, hosts)
	newBacklog(b, hosts, keyspace) // the tables, made before the instances start together
	nodes = startLimited(b, &cluster{t: b, env: withKafka(keyspace, "ORDERD_LEASE_TTL", "10s")}, fmt.Sprintf("scale-%d", k), k, quota)
	settle(b, nodes, "projector")
	settle(b, nodes, "relay")
	session = scaleSession(b, hosts, keyspace)
	var addrs []string
	for _, n := range nodes {
		addrs = append(addrs, n.svc.base)
	}
	burst := []string{"-addr", strings.Join(addrs, ","), "-mix", "create", "-duration", "10s", "-connections", "32"}
	if r := os.Getenv("ORDERD_BENCH_RATE"); r != "" {
		burst = append(burst, "-rate", r)
	}
	created := runBenchJSON(b, burst...)
	ended := time.Now()
	time.Sleep(time.Second)
	made := created.Ops["create"].Count - int64(len(created.Ops["create"].Errors))
	row.behind = max(0, made-projected())
	if row.behind > 0 { // and when the read model held them all (within a minute)
		for made-projected() > 0 && time.Since(ended) < time.Minute {
			time.Sleep(50 * time.Millisecond)
		}
		b.Logf("%d instance(s): %d orders behind 1 s after the burst; all projected %v after it", k, row.behind, time.Since(ended).Round(10*time.Millisecond))
	}
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

// backlog appends orders straight to a keyspace, as the instances would,
// for one customer.
type backlog struct {
	h    *aggregate.Handler
	cust uuid.UUID
}

// newBacklog opens the keyspace (making its tables) and registers the
// customer; the store stays open until the benchmark ends.
func newBacklog(b *testing.B, hosts []string, keyspace string) *backlog {
	b.Helper()
	ctx := context.Background()
	st, err := cql.OpenStore(ctx, cql.Config{Hosts: hosts, Keyspace: keyspace, Timeout: cqltest.Timeout,
		Logger: zaptest.NewLogger(b, zaptest.Level(zap.WarnLevel))}, cql.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	bl := &backlog{h: aggregate.NewHandler(st, time.Now, aggregate.WithEmailClaims(st.EmailClaims())), cust: uuid.New()}
	if _, err := bl.h.RegisterCustomer(ctx, bl.cust, aggregate.Meta{}, "scale-"+uuid.NewString()[:8]+"@example.com", "Scale", "Out", ""); err != nil {
		b.Fatal(err)
	}
	return bl
}

// append creates n orders, 64 at a time.
func (bl *backlog) append(n int) error {
	g, ctx := errgroup.WithContext(context.Background())
	g.SetLimit(64)
	for range n {
		g.Go(func() error {
			_, err := bl.h.CreateOrder(ctx, uuid.Must(uuid.NewV7()), aggregate.Meta{}, bl.cust, []aggregate.Item{{ProductID: uuid.New(), Quantity: 1}})
			return err
		})
	}
	return g.Wait()
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

// drain measures how fast the running instances drain a backlog of
// worker: it freezes them (SIGSTOP), appends the backlog (fill), thaws
// them (SIGCONT), and waits until done() reaches backlog. The rate is
// backlog events over the time from the thaw. (Appending while they run
// instead made the append the limit: with three instances the drain
// ended with it.) Every 5 s it logs where the drain is and how many of
// worker's shards each instance holds; at the end what each instance
// used of its CPU share, and how many shards were taken again (a new
// epoch) since the freeze, which a drain should not need.
func drain(b *testing.B, nodes []limited, worker string, backlog int, fill func() error, done func() int64) float64 {
	b.Helper()
	epochs := shardEpochs(b, nodes, worker)
	for _, n := range nodes {
		if err := syscall.Kill(n.pid, syscall.SIGSTOP); err != nil {
			b.Fatal(err)
		}
	}
	frozen := time.Now()
	if err := fill(); err != nil {
		b.Fatalf("append the backlog: %v", err)
	}
	if d := time.Since(frozen); d > scaleLeaseTTL/2 {
		// The leases were renewed at most a third of a TTL before: past
		// half a TTL more, a renewal may come too late.
		b.Logf("%d instance(s): frozen %s for the backlog's append, over half the lease TTL (%s): leases may lapse", len(nodes), d.Round(time.Millisecond), scaleLeaseTTL)
	}
	b.Logf("%d instance(s): %d events appended for the %s in %s, the instances frozen", len(nodes), backlog, worker, time.Since(frozen).Round(time.Millisecond))
	use0 := cgroupUse(b, nodes)
	up := time.Now()
	for _, n := range nodes {
		if err := syscall.Kill(n.pid, syscall.SIGCONT); err != nil {
			b.Fatal(err)
		}
	}
	logged := up
	for {
		// done may be a count(*) of the read model: once per round.
		n := done()
		if n >= int64(backlog) {
			break
		}
		time.Sleep(250 * time.Millisecond)
		now := time.Now()
		if now.Sub(up) > 20*time.Minute {
			b.Fatalf("%d instance(s): after 20 minutes the %s has done %d of %d", len(nodes), worker, n, backlog)
		}
		if now.Sub(logged) >= 5*time.Second {
			logged = now
			var held []string
			for _, l := range nodes {
				held = append(held, fmt.Sprintf("%s %d", l.id, len(l.ready(b).Components[worker].held())))
			}
			b.Logf("%d instance(s): %s %s: %d done; shards held: %s", len(nodes), worker, now.Sub(up).Round(time.Second), n, strings.Join(held, ", "))
		}
	}
	took := time.Since(up)
	retaken := 0
	for sh, e := range shardEpochs(b, nodes, worker) {
		if e != epochs[sh] {
			retaken++
		}
	}
	b.Logf("%d instance(s): the %s drained %d events in %s from the thaw; %d shards taken again since the freeze",
		len(nodes), worker, backlog, took.Round(time.Millisecond), retaken)
	for i, u := range cgroupUse(b, nodes) {
		u = u.since(use0[i])
		b.Logf("%d instance(s): %s used %.3f cores over the %s's drain, throttled in %d of %d periods",
			len(nodes), nodes[i].id, u.cpu.Seconds()/took.Seconds(), worker, u.throttled, u.periods)
	}
	return float64(backlog) / took.Seconds()
}

// settle waits until the instances hold worker's shards between them,
// each its share (N/k or N/k + 1 of N shards), and logs how long that
// took from now and the CPU time each instance has used since its start.
func settle(b *testing.B, nodes []limited, worker string) {
	b.Helper()
	t0 := time.Now()
	for {
		total, least, most, shards := 0, -1, 0, 0
		for _, n := range nodes {
			comp := n.ready(b).Components[worker]
			held := len(comp.held())
			total += held
			most = max(most, held)
			if least < 0 || held < least {
				least = held
			}
			shards = max(shards, len(comp.Shards))
		}
		if shards > 0 && total == shards && least >= shards/len(nodes) && most <= (shards+len(nodes)-1)/len(nodes) {
			break
		}
		if time.Since(t0) > 3*time.Minute {
			b.Fatalf("%d instance(s): the %s's shards not shared out after 3 minutes: %d held, %d to %d each", len(nodes), worker, total, least, most)
		}
		time.Sleep(250 * time.Millisecond)
	}
	var used []string
	for i, u := range cgroupUse(b, nodes) {
		used = append(used, fmt.Sprintf("%s %.2f s", nodes[i].id, u.cpu.Seconds()))
	}
	b.Logf("%d instance(s): the %s's shards shared out %s after the instances answered; CPU used since each started: %s",
		len(nodes), worker, time.Since(t0).Round(100*time.Millisecond), strings.Join(used, ", "))
}

// shardEpochs returns, for each shard of worker held by one of the
// instances, the epoch of its take.
func shardEpochs(b *testing.B, nodes []limited, worker string) map[int]int64 {
	b.Helper()
	out := map[int]int64{}
	for _, n := range nodes {
		for sh, e := range n.ready(b).Components[worker].held() {
			out[sh] = e
		}
	}
	return out
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
