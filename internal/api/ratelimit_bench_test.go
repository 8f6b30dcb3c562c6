package api

import (
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRateLimitMiddleware is the limiter's cost per request, beside
// none: "off" is the bare handler, "one-client" every request from one
// address (one bucket, contended under -cpu 2), "many-clients" from 50,000
// addresses in turn. The limit is never reached.
func BenchmarkRateLimitMiddleware(b *testing.B) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	limiter := func() http.Handler {
		return NewRateLimiter(RateLimitOptions{Rate: 1e9, Burst: 1e9}, nil).Middleware(ok)
	}
	addrs := make([]string, 50_000)
	for i := range addrs {
		addrs[i] = "10.1." + strconv.Itoa(i>>8&255) + "." + strconv.Itoa(i&255) + ":40000"
	}
	for _, c := range []struct {
		name  string
		h     http.Handler
		addrs []string
	}{{"off", ok, addrs[:1]}, {"one-client", limiter(), addrs[:1]}, {"many-clients", limiter(), addrs}} {
		b.Run(c.name, func(b *testing.B) {
			var n atomic.Uint64
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			b.RunParallel(func(pb *testing.PB) {
				req := httptest.NewRequest(http.MethodPost, "/v1/orders", nil)
				w := &discard{h: http.Header{}}
				for pb.Next() {
					req.RemoteAddr = c.addrs[n.Add(1)%uint64(len(c.addrs))]
					clear(w.h)
					c.h.ServeHTTP(w, req)
				}
			})
			// On a shared machine the CPU spent is steadier than ns/op.
			b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// discard is a ResponseWriter that keeps nothing.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(int)             {}

// TestRateLimitMemoryPerClient reports (with -v) the heap a client's bucket
// takes, and checks the estimate DefaultRateLimitClients is documented
// with: about 100 bytes (at most 300), so the default cap is some 10 MB.
func TestRateLimitMemoryPerClient(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the heap")
	}
	const n = 100_000
	// The clock stands still: on a loaded machine the takes outlasted the
	// 2 s in which a bucket fills again, and the sweep then dropped the
	// first clients' buckets (CI20 counted 43,604 of 100,000).
	start := time.Now()
	l := NewRateLimiter(RateLimitOptions{Rate: 1, Burst: 2, MaxClients: n + 1, Now: func() time.Time { return start }}, nil)
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = "10." + strconv.Itoa(i>>16&255) + "." + strconv.Itoa(i>>8&255) + "." + strconv.Itoa(i&255)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, a := range addrs {
		l.take(a)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%d clients: %.0f bytes of heap each", l.Clients(), per)
	if l.Clients() != n || per > 300 {
		t.Errorf("%d clients at %.0f bytes each, want %d at about 100", l.Clients(), per, n)
	}
}
