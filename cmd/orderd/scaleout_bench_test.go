package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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

	c := &cluster{t: b, env: kafkaEnv(b, brokers,
		"ORDERD_STORE", "scylla",
		"ORDERD_SCYLLA_HOSTS", strings.Join(hosts, ","),
		"ORDERD_SCYLLA_KEYSPACE", keyspace,
		"ORDERD_KAFKA_TOPICS", "Order="+orders+",Customer="+customers,
		"ORDERD_LOG_LEVEL", "warn",
	)}
	var nodes []*node
	var mu sync.Mutex
	var starting errgroup.Group
	for i := range k {
		starting.Go(func() error {
			n := c.start(fmt.Sprintf("scale-%d-%c", k, 'a'+i))
			limitCPU(b, fmt.Sprintf("scale-%d-%c-%d", k, 'a'+i, n.proc.cmd.Process.Pid), n.proc.cmd.Process.Pid, quota)
			mu.Lock()
			nodes = append(nodes, n)
			mu.Unlock()
			return nil
		})
	}
	_ = starting.Wait()
	up := time.Now()
	p0, r0 := projected(), int64(seen.count())
	var pDone, rDone time.Time
	for pDone.IsZero() || rDone.IsZero() {
		time.Sleep(500 * time.Millisecond)
		now := time.Now()
		if pDone.IsZero() && projected() >= int64(backlog) {
			pDone = now
		}
		if rDone.IsZero() && seen.count() >= backlog {
			rDone = now
		}
		if now.Sub(up) > 20*time.Minute {
			b.Fatalf("%d instance(s): after 20 minutes the projector holds %d and the relay published %d of %d orders", k, projected(), seen.count(), backlog)
		}
	}
	row := scaleRow{instances: k,
		projector: float64(int64(backlog)-p0) / pDone.Sub(up).Seconds(),
		relay:     float64(int64(backlog)-r0) / rDone.Sub(up).Seconds(),
	}
	b.Logf("%d instance(s): drained in %s (projector) and %s (relay) after the last instance answered; %d and %d were done by then",
		k, pDone.Sub(up).Round(time.Millisecond), rDone.Sub(up).Round(time.Millisecond), p0, r0)

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
		c.kill(n)
	}
	return row
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
// cores, and removes the cgroup when the benchmark ends (after the process
// is gone).
func limitCPU(b *testing.B, name string, pid int, quota float64) {
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
