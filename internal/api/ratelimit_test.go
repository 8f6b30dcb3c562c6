package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/orderd/orderd"
)

// clock is a hand-moved clock for the limiter.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

// limited is a server on no backend (its /v1 routes answer 400 for a bad
// id, with no store behind) with limiter l in front.
type limited struct {
	h     http.Handler
	clock *clock
	l     *RateLimiter
	reg   *prometheus.Registry
}

func newLimited(t *testing.T, o RateLimitOptions) *limited {
	t.Helper()
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	o.Now = c.now
	reg := prometheus.NewRegistry()
	l := NewRateLimiter(o, reg)
	ready := func(context.Context) map[string]Component { return map[string]Component{"store": {Status: "up"}} }
	h := New(nil, nil, nil, ready, orderd.OpenAPI, zap.NewNop()).
		WithAsyncAPI(orderd.AsyncAPI).
		WithMetrics(NewMetrics(reg), reg).
		WithConsole(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("console")) })).
		WithRateLimit(l).Handler()
	return &limited{h: h, clock: c, l: l, reg: reg}
}

// get sends GET path from the client at addr (host:port).
func (s *limited) get(path, addr string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.RemoteAddr = addr
	rec := httptest.NewRecorder()
	s.h.ServeHTTP(rec, req)
	return rec
}

// series is the value of a series of s's registry: the counter of family,
// or the gauge when family is empty.
func (s *limited) series(t *testing.T, name, family string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() != name {
				continue
			}
			if family == "" {
				return m.GetGauge().GetValue()
			}
			if len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == family {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s{family=%q}", name, family)
	return 0
}

var (
	rateLimitSyntax = regexp.MustCompile(`^"client";r=(\d+);t=(\d+)$`)
	policySyntax    = regexp.MustCompile(`^"client";q=([1-9]\d*);w=([1-9]\d*)$`)
)

// remaining checks the RateLimit fields of an answer and returns r and t.
func remaining(t *testing.T, rec *httptest.ResponseRecorder) (r, tt int) {
	t.Helper()
	if p := rec.Header().Get("RateLimit-Policy"); !policySyntax.MatchString(p) {
		t.Fatalf("RateLimit-Policy %q", p)
	}
	m := rateLimitSyntax.FindStringSubmatch(rec.Header().Get("RateLimit"))
	if m == nil {
		t.Fatalf("RateLimit %q", rec.Header().Get("RateLimit"))
	}
	r, _ = strconv.Atoi(m[1])
	tt, _ = strconv.Atoi(m[2])
	return r, tt
}

// refused checks a 429 rate_limited problem and returns its Retry-After.
func refused(t *testing.T, rec *httptest.ResponseRecorder) int {
	t.Helper()
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429: %s", rec.Code, rec.Body)
	}
	var p problemJSON
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("body %s (%v), content type %q", rec.Body, err, rec.Header().Get("Content-Type"))
	}
	if p.Code != "rate_limited" || p.Type != "urn:orderd:problem:rate_limited" || p.Status != 429 || p.Title != "Too Many Requests" {
		t.Fatalf("problem %+v", p)
	}
	after, err := strconv.Atoi(rec.Header().Get("Retry-After"))
	if err != nil || after < 1 {
		t.Fatalf("Retry-After %q", rec.Header().Get("Retry-After"))
	}
	r, tt := remaining(t, rec)
	if r != 0 || tt != after {
		t.Fatalf("RateLimit r=%d;t=%d on a 429 with Retry-After %d, want r=0;t=%d", r, tt, after, after)
	}
	return after
}

const order = "/v1/orders/not-an-id" // 400 at once: no backend needed

// TestRateLimitBurstAndRefill: a client may send its burst at once, the
// next request is refused until a token comes back, and each answer says
// how many are left.
func TestRateLimitBurstAndRefill(t *testing.T) {
	s := newLimited(t, RateLimitOptions{Rate: 2, Burst: 3})
	for want := 2; want >= 0; want-- {
		rec := s.get(order, "192.0.2.1:1000")
		if rec.Code != http.StatusBadRequest {
			t.Fatalf("request %d: %d %s", 3-want, rec.Code, rec.Body)
		}
		if r, tt := remaining(t, rec); r != want || tt != 1 {
			t.Fatalf("request %d: r=%d;t=%d, want r=%d;t=1", 3-want, r, tt, want)
		}
		if got := rec.Header().Get("RateLimit-Policy"); got != `"client";q=4;w=2` {
			t.Fatalf("RateLimit-Policy %q, want \"client\";q=4;w=2 (2/s over the 2 s a burst of 3 takes to fill)", got)
		}
	}
	if after := refused(t, s.get(order, "192.0.2.1:1001")); after != 1 { // another port, the same client
		t.Errorf("Retry-After %d, want 1 (a token every 0.5 s)", after)
	}
	s.clock.advance(499 * time.Millisecond)
	refused(t, s.get(order, "192.0.2.1:1000"))
	s.clock.advance(time.Millisecond)
	if rec := s.get(order, "192.0.2.1:1000"); rec.Code != http.StatusBadRequest {
		t.Fatalf("after 0.5 s: %d, want the token that came back", rec.Code)
	}
	refused(t, s.get(order, "192.0.2.1:1000"))
	s.clock.advance(time.Hour) // a bucket fills up to its burst, no further
	for i := range 3 {
		if rec := s.get(order, "192.0.2.1:1000"); rec.Code != http.StatusBadRequest {
			t.Fatalf("after an hour, request %d: %d", i+1, rec.Code)
		}
	}
	refused(t, s.get(order, "192.0.2.1:1000"))
	if got := s.series(t, "orderd_rate_limited_total", "orders"); got != 4 {
		t.Errorf("orderd_rate_limited_total{family=orders} %v, want 4", got)
	}
}

// TestRateLimitRetryAfter: Retry-After is the whole seconds, rounded up,
// until the client's bucket holds a token again.
func TestRateLimitRetryAfter(t *testing.T) {
	s := newLimited(t, RateLimitOptions{Rate: 0.2, Burst: 1}) // a token every 5 s
	const addr = "198.51.100.7:4242"
	t0 := s.clock.t
	if rec := s.get(order, addr); rec.Code != http.StatusBadRequest {
		t.Fatal(rec.Code)
	}
	for _, c := range []struct {
		at   time.Duration // since the token was spent
		want int
	}{{0, 5}, {2500 * time.Millisecond, 3}, {4 * time.Second, 1}, {4999 * time.Millisecond, 1}} {
		s.clock.t = t0.Add(c.at)
		if got := refused(t, s.get(order, addr)); got != c.want {
			t.Errorf("%v after: Retry-After %d, want %d", c.at, got, c.want)
		}
	}
	s.clock.t = t0.Add(5 * time.Second)
	if rec := s.get(order, addr); rec.Code != http.StatusBadRequest {
		t.Fatalf("after 5 s: %d %s", rec.Code, rec.Body)
	}
	if got := s.get("/v1/customers/x", addr).Header().Get("RateLimit-Policy"); got != `"client";q=1;w=5` {
		t.Errorf("RateLimit-Policy %q", got)
	}
}

// TestRateLimitPolicy: the policy in whole seconds for a few settings.
func TestRateLimitPolicy(t *testing.T) {
	for _, c := range []struct {
		rate  float64
		burst int
		want  string
	}{
		{100, 200, `"client";q=200;w=2`}, {5, 5, `"client";q=5;w=1`}, {100, 10, `"client";q=100;w=1`},
		{0.5, 1, `"client";q=1;w=2`}, {0.3, 1, `"client";q=1;w=4`}, {2.5, 5, `"client";q=5;w=2`},
	} {
		if got := NewRateLimiter(RateLimitOptions{Rate: c.rate, Burst: c.burst}, nil).policy[0]; got != c.want {
			t.Errorf("%v/s burst %d: %s, want %s", c.rate, c.burst, got, c.want)
		}
	}
}

// TestRateLimitExempt: probes, metrics, the contracts and the console are
// answered, without RateLimit fields, to a client that has spent its quota.
func TestRateLimitExempt(t *testing.T) {
	s := newLimited(t, RateLimitOptions{Rate: 1, Burst: 1})
	const addr = "203.0.113.9:5000"
	s.get(order, addr)
	refused(t, s.get(order, addr))
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/openapi.yaml", "/asyncapi.yaml", "/console", "/console/app.js"} {
		for range 3 {
			rec := s.get(path, addr)
			if rec.Code != http.StatusOK {
				t.Errorf("%s: %d %s", path, rec.Code, rec.Body)
			}
			if rec.Header().Get("RateLimit") != "" || rec.Header().Get("RateLimit-Policy") != "" {
				t.Errorf("%s: RateLimit fields on an exempt route", path)
			}
		}
	}
	// An unknown path under /v1 is the API's, and limited.
	if got := refused(t, s.get("/v1/nope", addr)); got != 1 {
		t.Errorf("Retry-After %d", got)
	}
	if got := s.series(t, "orderd_rate_limited_total", "other"); got != 1 {
		t.Errorf("orderd_rate_limited_total{family=other} %v, want 1", got)
	}
}

// TestRateLimitSeparateClients: each client has its own bucket; an IPv6
// client is its /64, and a key function may name clients otherwise.
func TestRateLimitSeparateClients(t *testing.T) {
	s := newLimited(t, RateLimitOptions{Rate: 1, Burst: 1})
	for _, c := range []struct{ spend, other string }{
		{"192.0.2.1:1", "192.0.2.2:1"},
		{"[2001:db8:1:2::1]:1", "[2001:db8:1:3::1]:1"},
	} {
		if rec := s.get(order, c.spend); rec.Code != http.StatusBadRequest {
			t.Fatalf("%s: %d", c.spend, rec.Code)
		}
		refused(t, s.get(order, c.spend))
		if rec := s.get(order, c.other); rec.Code != http.StatusBadRequest {
			t.Errorf("%s after %s spent its quota: %d", c.other, c.spend, rec.Code)
		}
	}
	// The same /64, and the IPv4-mapped form of a spent IPv4 client.
	refused(t, s.get(order, "[2001:db8:1:2:ffff::9]:2"))
	refused(t, s.get(order, "[::ffff:192.0.2.1]:3"))

	keyed := newLimited(t, RateLimitOptions{Rate: 1, Burst: 1, Key: func(r *http.Request) string { return r.Header.Get("X-Test-Subject") }})
	send := func(subject string) int {
		req := httptest.NewRequest(http.MethodGet, order, nil)
		req.Header.Set("X-Test-Subject", subject)
		rec := httptest.NewRecorder()
		keyed.h.ServeHTTP(rec, req)
		return rec.Code
	}
	if send("alice") != 400 || send("alice") != 429 || send("bob") != 400 {
		t.Error("clients by key function: alice's second request is refused, bob's first is not")
	}
}

// TestRateLimitEviction: the buckets kept stay within the cap under any
// number of clients, buckets that filled up again are dropped, and a
// bucket still being refilled is kept (waiting less than the fill time
// does not reset a client).
func TestRateLimitEviction(t *testing.T) {
	s := newLimited(t, RateLimitOptions{Rate: 1, Burst: 4, MaxClients: 100}) // fills in 4 s
	for i := range 10_000 {
		addr := "10." + strconv.Itoa(i>>16&255) + "." + strconv.Itoa(i>>8&255) + "." + strconv.Itoa(i&255) + ":1"
		if rec := s.get(order, addr); rec.Code != http.StatusBadRequest {
			t.Fatalf("client %d: %d", i, rec.Code)
		}
		if n := s.l.Clients(); n > 100 {
			t.Fatalf("%d buckets after %d clients, want at most 100", n, i+1)
		}
	}
	if g := s.series(t, "orderd_rate_limit_clients", ""); g < 75 || g > 100 {
		t.Errorf("orderd_rate_limit_clients %v, want 75 to 100", g)
	}

	s.clock.advance(3 * time.Second)
	for range 4 {
		s.get(order, "192.0.2.50:1") // spends its bucket 1 s before the sweep
	}
	s.clock.advance(1500 * time.Millisecond) // the others are full again: 4.5 s > 4 s
	s.get(order, "192.0.2.51:1")             // a new client: the sweep is due
	if n := s.l.Clients(); n != 2 {
		t.Fatalf("%d buckets after the sweep, want 2 (the one refilling, the new one)", n)
	}
	if r, _ := remaining(t, s.get(order, "192.0.2.50:1")); r != 0 {
		t.Errorf("the refilling client has r=%d after the sweep, want 0 (1.5 tokens, one spent)", r)
	}
}

// TestRateLimitConcurrent: many requests at once from one client get no
// more than its burst and what came back meanwhile, while 4,000 clients of
// one request each pass through a cap of 50: the limited client's empty
// bucket is never the one dropped (run with -race).
func TestRateLimitConcurrent(t *testing.T) {
	l := NewRateLimiter(RateLimitOptions{Rate: 10, Burst: 5, MaxClients: 50}, nil)
	h := l.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	began := time.Now()
	var served, passing atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 1000 {
				addr := "192.0.2.1:1"
				if i%2 == 1 { // every other request from a client passing by
					p := passing.Add(1)
					addr = "10.0." + strconv.FormatInt(p>>8, 10) + "." + strconv.FormatInt(p&255, 10) + ":1"
				}
				rec := httptest.NewRecorder()
				req := httptest.NewRequest(http.MethodGet, "/v1/orders", nil)
				req.RemoteAddr = addr
				h.ServeHTTP(rec, req)
				if addr == "192.0.2.1:1" && rec.Code == http.StatusNoContent {
					served.Add(1)
				}
			}
		})
	}
	wg.Wait()
	most := 5 + int64(time.Since(began).Seconds()*10) + 1
	if got := served.Load(); got < 5 || got > most {
		t.Errorf("one client was served %d of 4,000 concurrent requests, want 5 to %d", got, most)
	}
	if n := l.Clients(); n > 50 {
		t.Errorf("%d buckets, want at most 50", n)
	}
}
