package cli

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"
)

const benchUsage = `usage: orderd bench [flags]

Drives a running orderd over its HTTP API and reports throughput, latency
percentiles per operation, errors by status and the read-your-writes lag.
Each worker registers a customer of its own first, outside the measurement.
-addr may name several instances of one deployment, comma-separated: the
workers are spread over them round-robin (worker i sends everything to
the i-th modulo their number), as a load balancer would.

  -mix create      every operation is a CreateOrder
  -mix lifecycle   each order is created, its items updated, confirmed,
                   shipped and delivered; after each command a
                   GET ?min_version=<the version it answered> reads it back
                   (10 operations per order)

With -rate 0 the workers send as fast as they are answered (closed loop).
With -rate R the operations are scheduled R per second whatever the server
does (open loop), and each latency runs from the operation's scheduled
start, so a stall shows in the latencies instead of hiding in a slower
pace. A read is sent the moment its command answers, so its latency is the
read-your-writes lag. The run ends after -duration or -count operations,
whichever comes first (with -count alone there is no time limit).
Progress goes to stderr; the report to stdout. Flags:
`

// Operations the load generator sends, in the report's order.
type benchOp int

const (
	opCreate benchOp = iota
	opUpdate
	opConfirm
	opShip
	opDeliver
	opGet
	numBenchOps
)

var benchOpNames = [numBenchOps]string{"create", "update", "confirm", "ship", "deliver", "get"}

// lifecycleOps is how many operations one order of the lifecycle mix takes:
// five commands, each read back.
const lifecycleOps = 10

// benchConfig is what the flags of orderd bench say.
type benchConfig struct {
	base        string   // the -addr flag as given, for the report
	bases       []string // the instances, at least one
	mix         string
	connections int
	duration    time.Duration // 0: no time limit (-count alone)
	count       int64         // 0: no limit
	rate        float64       // operations/s; 0: closed loop
	warmup      time.Duration
	json        bool
}

// Bench is `orderd bench`, a load generator for the running orderd at
// -addr (ORDERD_URL). It prints the report to stdout, progress to stderr,
// and every failure to start, as "orderd bench: …", to stderr and returns
// it; errors of the operations themselves are counted in the report, not
// returned. -help prints the usage and returns nil. terminal says whether
// stderr is one: then progress is one line redrawn in place.
func Bench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, terminal bool) (err error) {
	defer func() { report(stderr, "bench", err) }()
	cfg, err := parseBenchFlags(args, getenv, stderr)
	if err != nil || cfg == nil {
		return err
	}
	b := newBench(cfg)
	defer b.client.CloseIdleConnections()
	if err := b.registerCustomers(ctx); err != nil {
		return err
	}
	if cfg.warmup > 0 {
		fmt.Fprintf(stderr, "warming up for %s\n", cfg.warmup)
		b.phase(ctx, cfg.warmup, 0, nil)
	}
	p := &benchProgress{w: stderr, terminal: terminal}
	rep := b.phase(ctx, cfg.duration, cfg.count, p)
	if cfg.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.writeTable(stdout)
}

// parseBenchFlags reads the flags; it returns a nil config and no error
// after -help.
func parseBenchFlags(args []string, getenv func(string) string, stderr io.Writer) (*benchConfig, error) {
	fs := newCommand("bench", benchUsage, stderr)
	cfg := &benchConfig{}
	addr := fs.String("addr", cmp.Or(getenv("ORDERD_URL"), "http://127.0.0.1:8080"), "orderd's base `URL` (ORDERD_URL); several, comma-separated, share the workers")
	fs.StringVar(&cfg.mix, "mix", "create", "what to send: `create` or lifecycle")
	fs.IntVar(&cfg.connections, "connections", 64, "`N` workers, each with at most one request in flight, and the client's connections")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long to measure")
	fs.Int64Var(&cfg.count, "count", 0, "stop after `N` operations (lifecycle: rounded down to whole orders of 10)")
	fs.Float64Var(&cfg.rate, "rate", 0, "`R` operations per second, scheduled at a constant pace (open loop); 0: as fast as answered (closed loop)")
	fs.DurationVar(&cfg.warmup, "warmup", 0, "run the same load this long first, unmeasured")
	fs.BoolVar(&cfg.json, "json", false, "print the report as one JSON object")
	words, err := fs.parse(args)
	if err != nil || words == nil {
		return nil, err
	}
	if len(words) > 0 {
		return nil, fmt.Errorf("bench takes no argument, got %q", words)
	}
	durationSet := false
	fs.Visit(func(f *flag.Flag) { durationSet = durationSet || f.Name == "duration" })
	if cfg.count > 0 && !durationSet {
		cfg.duration = 0
	}
	cfg.base = *addr
	for a := range strings.SplitSeq(*addr, ",") {
		a = strings.TrimRight(strings.TrimSpace(a), "/")
		if !strings.HasPrefix(a, "http://") && !strings.HasPrefix(a, "https://") {
			return nil, fmt.Errorf("-addr %q: want http:// or https:// URLs, comma-separated", *addr)
		}
		cfg.bases = append(cfg.bases, a)
	}
	switch {
	case cfg.mix != "create" && cfg.mix != "lifecycle":
		return nil, fmt.Errorf("-mix %q: want create or lifecycle", cfg.mix)
	case cfg.connections < 1:
		return nil, fmt.Errorf("-connections %d: want 1 or more", cfg.connections)
	case cfg.count < 0 || cfg.rate < 0 || cfg.warmup < 0:
		return nil, errors.New("-count, -rate and -warmup cannot be negative")
	case durationSet && cfg.duration <= 0:
		return nil, fmt.Errorf("-duration %s: want more than 0", cfg.duration)
	case cfg.mix == "lifecycle" && cfg.count > 0 && cfg.count < lifecycleOps:
		return nil, fmt.Errorf("-count %d: an order of the lifecycle mix takes %d operations", cfg.count, lifecycleOps)
	}
	return cfg, nil
}

// bench is one run of the load generator against one orderd.
type bench struct {
	cfg       *benchConfig
	client    *http.Client
	customers []string // one per worker
}

func newBench(cfg *benchConfig) *bench {
	return &bench{cfg: cfg, client: &http.Client{
		// Above the longest min_version wait (about 2 s): a request that
		// takes longer counts as a transport error.
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxConnsPerHost:     cfg.connections,
			MaxIdleConnsPerHost: cfg.connections,
			IdleConnTimeout:     20 * time.Second, // under orderd's 30 s
		},
	}}
}

// registerCustomers registers one customer per worker, under addresses of
// this run: e-mails are unique in a deployment. The first one alone, so
// that an orderd that cannot be reached is one clear error.
func (b *bench) registerCustomers(ctx context.Context) error {
	run := strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
	b.customers = make([]string, b.cfg.connections)
	register := func(i int) error {
		body := fmt.Sprintf(`{"email":"bench-%s-%d@example.com","first_name":"Bench","last_name":"Worker %d"}`, run, i, i)
		base := b.base(i)
		res, status, err := b.send(ctx, base, http.MethodPost, "/v1/customers", []byte(body))
		switch {
		case err != nil:
			return fmt.Errorf("cannot reach orderd at %s: %w", base, err)
		case status != http.StatusCreated:
			return fmt.Errorf("registering the workers' customers at %s: status %d", base, status)
		}
		b.customers[i] = res.ID
		return nil
	}
	if err := register(0); err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(b.cfg.connections)
	for i := 1; i < b.cfg.connections; i++ {
		g.Go(func() error { return register(i) })
	}
	return g.Wait()
}

// commandAnswer is what a command (and the customer registration) answers.
type commandAnswer struct {
	ID      string `json:"id"`
	Version int64  `json:"version"`
}

// base returns the instance worker i sends to.
func (b *bench) base(i int) string { return b.cfg.bases[i%len(b.cfg.bases)] }

// send makes one request to the instance at base and reads its whole
// answer; err is a transport error (no answer, or a cut one). A 2xx answer
// is decoded.
func (b *bench) send(ctx context.Context, base, method, path string, body []byte) (commandAnswer, int, error) {
	var res commandAnswer
	var rd io.Reader = http.NoBody
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return res, 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return res, 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return res, 0, err
	}
	if resp.StatusCode/100 == 2 && method != http.MethodGet {
		if err := json.Unmarshal(raw, &res); err != nil {
			return res, 0, fmt.Errorf("%s %s: the answer is not a command's result: %w", method, path, err)
		}
	}
	return res, resp.StatusCode, nil
}

// phase runs the workers until the duration ends, the count is spent or
// ctx ends, and reports what they measured. The requests in flight when
// ctx ends are finished and counted.
func (b *bench) phase(ctx context.Context, duration time.Duration, count int64, p *benchProgress) *benchReport {
	rec := newRecorder()
	s := newSchedule(ctx, b.cfg.rate, duration)
	left := &budget{unlimited: count == 0}
	left.n.Store(count)
	perOrder := int64(1)
	if b.cfg.mix == "lifecycle" {
		perOrder = lifecycleOps
	}
	stopProgress := func() {}
	if p != nil {
		stopProgress = p.follow(rec, s)
	}
	var wg sync.WaitGroup
	for i := range b.cfg.connections {
		w := &benchWorker{b: b, base: b.base(i), rec: rec, s: s, customer: b.customers[i], ctx: context.WithoutCancel(ctx)}
		wg.Go(func() {
			for left.take(perOrder) && w.order(b.cfg.mix == "lifecycle") {
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(s.start)
	stopProgress()
	return rec.report(b.cfg, elapsed, s.maxBacklog.Load())
}

// benchWorker sends one operation at a time.
type benchWorker struct {
	b        *bench
	base     string // the instance it sends to
	rec      *recorder
	s        *schedule
	customer string
	ctx      context.Context // requests in flight finish when the run is stopped
}

// order creates an order and, in the lifecycle mix, takes it to delivered,
// reading it back after each command. It returns false when the schedule
// is over. A failed command abandons the order (a failed read does not).
func (w *benchWorker) order(lifecycle bool) bool {
	body := fmt.Sprintf(`{"customer_id":%q,"items":[{"product_id":%q,"quantity":2}]}`, w.customer, uuid.NewString())
	res, answered, ok, more := w.command(opCreate, http.MethodPost, "/v1/orders", body, http.StatusCreated)
	if !lifecycle || !ok || !more {
		return more
	}
	path := "/v1/orders/" + res.ID
	steps := []struct {
		op           benchOp
		method, path string
		body         string
	}{
		{opUpdate, http.MethodPut, path + "/items", fmt.Sprintf(`{"items":[{"product_id":%q,"quantity":3}]}`, uuid.NewString())},
		{opConfirm, http.MethodPost, path + "/confirm", ""},
		{opShip, http.MethodPost, path + "/ship", `{"tracking_number":"BENCH-` + res.ID[:8] + `","carrier":"orderd bench"}`},
		{opDeliver, http.MethodPost, path + "/deliver", `{"signature":"orderd bench"}`},
	}
	for i := 0; ; i++ {
		if !w.read(fmt.Sprintf("%s?min_version=%d", path, res.Version), answered) {
			return false
		}
		if i == len(steps) {
			return true
		}
		st := steps[i]
		if res, answered, ok, more = w.command(st.op, st.method, st.path, st.body, http.StatusOK); !ok || !more {
			return more
		}
	}
}

// command sends a command at its slot of the schedule. ok says it answered
// want; more is false when the schedule is over (nothing was sent).
func (w *benchWorker) command(op benchOp, method, path, body string, want int) (res commandAnswer, answered time.Time, ok, more bool) {
	at, more := w.s.slot()
	if !more || !w.s.wait(at) {
		return res, answered, false, false
	}
	var raw []byte
	if body != "" {
		raw = []byte(body)
	}
	res, status, err := w.b.send(w.ctx, w.base, method, path, raw)
	answered = time.Now()
	return res, answered, w.rec.record(op, at, answered, status, want, err), true
}

// read sends GET path (with min_version) the moment its command answered:
// it takes a slot of the schedule, but a client reading its own write does
// not wait, so its latency runs from the command's answer and is the
// read-your-writes lag. It returns false when the schedule is over.
func (w *benchWorker) read(path string, commandAnswered time.Time) bool {
	if _, more := w.s.slot(); !more {
		return false
	}
	_, status, err := w.b.send(w.ctx, w.base, http.MethodGet, path, nil)
	w.rec.record(opGet, commandAnswered, time.Now(), status, http.StatusOK, err)
	return true
}
