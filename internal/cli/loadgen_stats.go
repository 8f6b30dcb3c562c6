package cli

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, from 1 µs to an hour, to three
// significant digits: an HDR histogram's fixed few tens of KiB per
// operation type, however long the run.
const (
	histMaxMicros = int64(time.Hour / time.Microsecond)
	histDigits    = 3
)

// transportError is the error key of a request that got no (whole) answer.
const transportError = "transport"

// recorder collects the outcomes of one phase. Workers record under one
// mutex: at tens of thousands of operations per second it is not what
// limits them, and progress reads consistent figures.
type recorder struct {
	mu             sync.Mutex
	ops            [numBenchOps]opRecord
	total          opRecord
	firstTransport string
}

// opRecord is one operation type's (or all operations') outcomes.
type opRecord struct {
	count  int64
	lat    *hdrhistogram.Histogram // of the operations that succeeded
	errors map[string]int64        // by HTTP status, or transportError
}

func newOpRecord() opRecord {
	return opRecord{lat: hdrhistogram.New(1, histMaxMicros, histDigits), errors: map[string]int64{}}
}

func newRecorder() *recorder {
	r := &recorder{total: newOpRecord()}
	for i := range r.ops {
		r.ops[i] = newOpRecord()
	}
	return r
}

// record counts one operation, started (as scheduled) at started and
// answered at answered with status, or failed with the transport error err.
// It reports whether the answer was want. Only successes have a latency:
// a quick 503 would otherwise flatter the percentiles.
func (r *recorder) record(op benchOp, started, answered time.Time, status, want int, err error) bool {
	ok := err == nil && status == want
	key := transportError
	if err == nil {
		key = strconv.Itoa(status)
	}
	micros := max(1, answered.Sub(started).Microseconds())
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range []*opRecord{&r.ops[op], &r.total} {
		o.count++
		if ok {
			_ = o.lat.RecordValue(min(micros, histMaxMicros))
		} else {
			o.errors[key]++
		}
	}
	if err != nil && r.firstTransport == "" {
		r.firstTransport = err.Error()
	}
	return ok
}

// live is what progress shows: operations done, errors, p99 so far.
func (r *recorder) live() (done, errs int64, p99 time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.total.errors {
		errs += n
	}
	return r.total.count, errs, time.Duration(r.total.lat.ValueAtQuantile(99)) * time.Microsecond
}

// benchReport is the outcome of a run: the -json output, and the table.
type benchReport struct {
	Addr           string              `json:"addr"`
	Mix            string              `json:"mix"`
	Connections    int                 `json:"connections"`
	Rate           float64             `json:"rate"` // scheduled operations/s; 0: closed loop
	ElapsedSeconds float64             `json:"elapsed_seconds"`
	Total          opReport            `json:"total"`
	Ops            map[string]opReport `json:"ops"` // the operation types sent
	// Lag is the read-your-writes delay: from a command's answer until its
	// GET ?min_version answered 200. Absent in the create mix.
	Lag            *lagReport `json:"lag_ms,omitempty"`
	MaxBacklog     int64      `json:"max_backlog"` // open loop: most operations due and waiting for a worker
	FirstTransport string     `json:"first_transport_error,omitempty"`
}

type opReport struct {
	Count        int64            `json:"count"`
	OpsPerSecond float64          `json:"ops_per_second"`
	Errors       map[string]int64 `json:"errors"`
	Latency      latencyReport    `json:"latency_ms"`
}

type latencyReport struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
}

type lagReport struct {
	Reads int64   `json:"reads"`
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

func millis(h *hdrhistogram.Histogram, q float64) float64 {
	return float64(h.ValueAtQuantile(q)) / 1000
}

func (o *opRecord) report(elapsed time.Duration) opReport {
	return opReport{
		Count:        o.count,
		OpsPerSecond: float64(o.count) / elapsed.Seconds(),
		Errors:       maps.Clone(o.errors),
		Latency: latencyReport{P50: millis(o.lat, 50), P90: millis(o.lat, 90), P99: millis(o.lat, 99),
			P999: millis(o.lat, 99.9), Max: float64(o.lat.Max()) / 1000},
	}
}

// report sums the phase up; elapsed runs from its start to its last answer.
func (r *recorder) report(cfg *benchConfig, elapsed time.Duration, maxBacklog int64) *benchReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := &benchReport{Addr: cfg.base, Mix: cfg.mix, Connections: cfg.connections, Rate: cfg.rate,
		ElapsedSeconds: elapsed.Seconds(), Total: r.total.report(elapsed), Ops: map[string]opReport{},
		MaxBacklog: maxBacklog, FirstTransport: r.firstTransport}
	for op := range numBenchOps {
		if r.ops[op].count > 0 {
			rep.Ops[benchOpNames[op]] = r.ops[op].report(elapsed)
		}
	}
	// A read is sent the moment its command answers and its latency runs
	// from that answer (benchWorker.read): the get latencies are the lag.
	if cfg.mix == "lifecycle" {
		get := r.ops[opGet].lat
		rep.Lag = &lagReport{Reads: get.TotalCount(), P50: millis(get, 50), P99: millis(get, 99), Max: float64(get.Max()) / 1000}
	}
	return rep
}

// writeTable prints the report for people.
func (rep *benchReport) writeTable(w io.Writer) error {
	loop := "closed loop"
	if rep.Rate > 0 {
		loop = fmt.Sprintf("open loop at %g operations/s", rep.Rate)
	}
	fmt.Fprintf(w, "orderd bench: %s mix against %s, %d connections, %s, %.2f s\n\n",
		rep.Mix, rep.Addr, rep.Connections, loop, rep.ElapsedSeconds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "operation\tcount\tops/s\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\tmax ms\terrors\t")
	row := func(name string, o opReport) {
		l := o.Latency
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t\n",
			name, o.Count, o.OpsPerSecond, l.P50, l.P90, l.P99, l.P999, l.Max, errorsText(o.Errors))
	}
	for _, name := range benchOpNames {
		if o, ok := rep.Ops[name]; ok {
			row(name, o)
		}
	}
	row("total", rep.Total)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if rep.Lag != nil {
		fmt.Fprintf(w, "read-your-writes lag (a command's answer → its min_version read answered 200), %d reads: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
			rep.Lag.Reads, rep.Lag.P50, rep.Lag.P99, rep.Lag.Max)
	}
	if rep.Rate > 0 {
		fmt.Fprintf(w, "open loop: at most %d operations were due and waiting for a worker\n", rep.MaxBacklog)
	}
	if rep.FirstTransport != "" {
		fmt.Fprintf(w, "first transport error: %s\n", rep.FirstTransport)
	}
	return nil
}

// errorsText is "-" or "503:2 transport:1".
func errorsText(errs map[string]int64) string {
	if len(errs) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(errs)) {
		parts = append(parts, fmt.Sprintf("%s:%d", k, errs[k]))
	}
	return strings.Join(parts, " ")
}

// benchProgress shows a run's progress on stderr: on a terminal one line
// redrawn every redrawEvery; otherwise a plain line every plainEvery.
type benchProgress struct {
	w        io.Writer
	terminal bool
}

const (
	redrawEvery      = 500 * time.Millisecond
	benchPlainEvery  = 5 * time.Second
	benchRateWindow  = time.Second
	benchRateSamples = int(benchRateWindow/redrawEvery) + 1
)

// follow prints progress until the returned function is called.
func (p *benchProgress) follow(rec *recorder, s *schedule) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(redrawEvery)
		defer t.Stop()
		type sample struct {
			at   time.Time
			done int64
		}
		// The pace is over the last second: the samples of the last
		// benchRateWindow, oldest first.
		window := []sample{{s.start, 0}}
		lastPlain := s.start
		for {
			select {
			case <-quit:
				if p.terminal {
					fmt.Fprintln(p.w)
				}
				return
			case now := <-t.C:
				n, errs, p99 := rec.live()
				window = append(window, sample{now, n})
				if len(window) > benchRateSamples {
					window = window[1:]
				}
				pace := float64(n-window[0].done) / now.Sub(window[0].at).Seconds()
				line := fmt.Sprintf("%5.1fs  %d ops  %.0f ops/s  %d errors  p99 %.2f ms",
					now.Sub(s.start).Seconds(), n, pace, errs, float64(p99.Microseconds())/1000)
				if s.rate > 0 {
					line += fmt.Sprintf("  backlog %d", s.backlog(now))
				}
				switch {
				case p.terminal:
					fmt.Fprintf(p.w, "\r\033[K%s", line)
				case now.Sub(lastPlain) >= benchPlainEvery:
					fmt.Fprintln(p.w, "bench:", strings.Join(strings.Fields(line), " "))
					lastPlain = now
				}
			}
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}
