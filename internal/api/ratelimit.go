package api

import (
	"cmp"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/orderd/orderd/internal/aggregate"
)

// DefaultRateLimitClients is how many clients' buckets a RateLimiter keeps
// at most. An entry takes about 100 bytes (TestRateLimitMemoryPerClient
// measures it), so the bound is some 10 MB however many addresses a client
// forges.
const DefaultRateLimitClients = 100_000

// rateLimitPolicy is the name of orderd's one quota policy in the
// RateLimit-Policy and RateLimit fields: a bucket per client.
const rateLimitPolicy = "client"

// rateLimitedFamilies are the values of orderd_rate_limited_total's family
// label: the first segment under /v1/, or "other" (a path no route has).
var rateLimitedFamilies = []string{"orders", "customers", "events", "admin", "other"}

// RateLimitOptions configure a RateLimiter.
type RateLimitOptions struct {
	// Rate is the requests per second a client may sustain; it must be
	// positive.
	Rate float64
	// Burst is how many requests a client may send at once, the size of
	// its bucket; at least 1.
	Burst int
	// Key names the client a request comes from. nil: ClientKey, the
	// verified token's subject, else the connection's address.
	Key func(*http.Request) string
	// MaxClients bounds the buckets kept; 0: DefaultRateLimitClients.
	MaxClients int
	// Now is the clock; nil: time.Now. Tests move it by hand.
	Now func() time.Time
}

// RateLimiter is a token bucket per client (golang.org/x/time/rate) in
// front of the API's /v1 routes: a client that has spent its bucket gets
// 429 rate_limited, with Retry-After, until a token comes back. Every
// answer it lets through carries the RateLimit-Policy and RateLimit fields
// of draft-ietf-httpapi-ratelimit-headers-11, so clients can pace
// themselves. Probes, metrics, the contracts and the console (everything
// outside /v1/) are never limited.
//
// Memory stays bounded: a full bucket is the same as none, so buckets that
// filled up again are dropped by the first new client after each refill
// period (the time an empty bucket takes to fill, at least a second); when MaxClients are kept all
// the same, the fullest are dropped down to three quarters of the cap. A
// client dropped with a partly spent bucket gets a full one back; the
// clients being limited, whose buckets are empty, are the last dropped.
type RateLimiter struct {
	rate       rate.Limit
	burst      int
	key        func(*http.Request) string
	now        func() time.Time
	maxClients int
	sweepEvery time.Duration
	policy     []string // the RateLimit-Policy field, the same on every answer (never changed: shared)

	refused map[string]prometheus.Counter // by family

	mu        sync.Mutex
	clients   map[string]*rate.Limiter
	nextSweep time.Time
}

// NewRateLimiter returns a limiter of o, with its series
// (orderd_rate_limited_total, orderd_rate_limit_clients) registered with
// reg when it is not nil. It panics on a rate that is not positive or a
// burst under 1: the configuration checks both.
func NewRateLimiter(o RateLimitOptions, reg prometheus.Registerer) *RateLimiter {
	if !(o.Rate > 0) || math.IsInf(o.Rate, 0) || o.Burst < 1 {
		panic(fmt.Sprintf("api: rate limit %v/s with burst %d", o.Rate, o.Burst))
	}
	l := &RateLimiter{rate: rate.Limit(o.Rate), burst: o.Burst, key: o.Key, now: o.Now,
		maxClients: o.MaxClients, clients: map[string]*rate.Limiter{}, refused: map[string]prometheus.Counter{}}
	if l.key == nil {
		l.key = ClientKey
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.maxClients <= 0 {
		l.maxClients = DefaultRateLimitClients
	}
	fill := time.Duration(float64(o.Burst) / o.Rate * float64(time.Second))
	l.sweepEvery = max(fill, time.Second)
	// The policy in whole seconds, as the draft wants: the requests a
	// client may sustain over the time its bucket takes to fill (at least
	// a second). With the default burst of twice the rate that is q=burst,
	// w=2.
	w := max(1, math.Ceil(float64(o.Burst)/o.Rate))
	q := int64(math.Floor(o.Rate * w))
	l.policy = []string{fmt.Sprintf("%q;q=%d;w=%d", rateLimitPolicy, q, int64(w))}

	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "orderd_rate_limited_total",
		Help: "Requests refused with 429 rate_limited because their client had spent its quota, by route family (orders, customers, events, admin, other).",
	}, []string{"family"})
	for _, f := range rateLimitedFamilies {
		l.refused[f] = refused.WithLabelValues(f) // every family shows, at 0
	}
	if reg != nil {
		reg.MustRegister(refused, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "orderd_rate_limit_clients",
			Help: "Clients whose token bucket the rate limiter keeps now (buckets that filled up again are dropped).",
		}, func() float64 { return float64(l.Clients()) }))
	}
	return l
}

// WithRateLimit limits each client's requests to the /v1 routes with l;
// nil leaves them unlimited. The limiter runs after the correlation id is
// set (its 429 carries one) and, once requests are authenticated, must
// run after the middleware that finds the token's subject, so that l's
// key function can use it.
func (s *Server) WithRateLimit(l *RateLimiter) *Server {
	s.limit = l
	return s
}

// Middleware answers 429 to a request to /v1/ whose client has no token
// left, and adds RateLimit-Policy and RateLimit to every /v1/ answer.
func (l *RateLimiter) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, limited := strings.CutPrefix(r.URL.Path, "/v1/")
		if !limited {
			next.ServeHTTP(w, r)
			return
		}
		ok, remaining, wait := l.take(l.key(r))
		h := w.Header()
		h["Ratelimit-Policy"] = l.policy // canonical keys: no Set, no allocation
		// t is the whole seconds until the next token, rounded up: within
		// it the client can count on no more than r requests.
		t := ceilSeconds(wait)
		var buf [48]byte
		field := append(buf[:0], `"`+rateLimitPolicy+`";r=`...)
		field = strconv.AppendInt(field, int64(remaining), 10)
		field = strconv.AppendInt(append(field, ";t="...), t, 10)
		h["Ratelimit"] = []string{string(field)}
		if ok {
			next.ServeHTTP(w, r)
			return
		}
		l.refused[family(rest)].Inc()
		h["Retry-After"] = []string{strconv.FormatInt(t, 10)}
		writeError(w, r, &aggregate.Error{Kind: errRateLimited, Detail: fmt.Sprintf(
			"this client has spent its quota of %s requests per second (bursts of %d); retry after %d s",
			strconv.FormatFloat(float64(l.rate), 'f', -1, 64), l.burst, t)})
	})
}

// take spends a token of key's bucket. It reports whether there was one,
// the whole tokens left and the time until the bucket holds one more
// (until it holds one, when there was none).
func (l *RateLimiter) take(key string) (ok bool, remaining int, wait time.Duration) {
	now := l.now()
	b := l.bucket(key, now)
	ok = b.AllowN(now, 1)
	tokens := b.TokensAt(now)
	if tokens >= float64(l.burst) {
		return ok, l.burst, 0
	}
	whole := math.Floor(max(tokens, 0))
	// The time the bucket takes to gain the fraction of a token it lacks.
	wait = time.Duration((whole + 1 - tokens) / float64(l.rate) * float64(time.Second))
	return ok, int(whole), wait
}

// bucket returns key's bucket, a new (full) one when it has none. A new
// client sweeps the buckets first when the sweep period has passed or the
// cap is reached: without new clients the map does not grow.
func (l *RateLimiter) bucket(key string, now time.Time) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.clients[key]; ok {
		return b
	}
	if !now.Before(l.nextSweep) || len(l.clients) >= l.maxClients {
		l.sweep(now)
	}
	b := rate.NewLimiter(l.rate, l.burst)
	l.clients[strings.Clone(key)] = b
	return b
}

// sweep drops the buckets that are full again into a new map (a Go map
// never shrinks, so the memory of a burst of clients comes back). If the
// cap is still reached, it keeps the three quarters of the cap whose
// buckets are the emptiest, so that the next forced sweep is a quarter of
// the cap of new clients away: a client being limited keeps its empty
// bucket, and those dropped had spent least of theirs. l.mu is held.
func (l *RateLimiter) sweep(now time.Time) {
	type entry struct {
		key    string
		b      *rate.Limiter
		tokens float64
	}
	var live []entry
	for k, b := range l.clients {
		if t := b.TokensAt(now); t < float64(l.burst) {
			live = append(live, entry{k, b, t})
		}
	}
	if len(live) >= l.maxClients {
		slices.SortFunc(live, func(a, b entry) int { return cmp.Compare(a.tokens, b.tokens) })
		live = live[:l.maxClients*3/4]
	}
	l.clients = make(map[string]*rate.Limiter, len(live))
	for _, e := range live {
		l.clients[e.key] = e.b
	}
	l.nextSweep = now.Add(l.sweepEvery)
}

// Clients is the number of buckets kept now.
func (l *RateLimiter) Clients() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.clients)
}

// ClientKey is the default client key: the subject of the request's
// verified bearer token (Subject), so that a client keeps its quota from
// any address; without one, ClientIP. The two never collide: a subject's
// key starts with "sub:".
func ClientKey(r *http.Request) string {
	if sub := Subject(r.Context()); sub != "" {
		return "sub:" + sub
	}
	return ClientIP(r)
}

// ClientIP is the client key of a request without a verified token: the IP
// address the connection comes from, without its port. Forwarding headers such as X-Forwarded-For are
// not trusted: any client can write them. An IPv6 client is its /64
// network, the block one subscriber gets; an IPv4 address mapped into IPv6
// is the IPv4 address.
func ClientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if strings.IndexByte(host, ':') < 0 {
		return host // IPv4: the text as it is, without an allocation
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	if ip.Is4In6() {
		return ip.Unmap().String()
	}
	p, _ := ip.WithZone("").Prefix(64)
	return p.String()
}

// family is the route family of a path under /v1/ (given without it), for
// orderd_rate_limited_total.
func family(rest string) string {
	first, _, _ := strings.Cut(rest, "/")
	switch first {
	case "orders", "customers", "events", "admin":
		return first
	}
	return "other"
}

// ceilSeconds is d in whole seconds, rounded up.
func ceilSeconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}
