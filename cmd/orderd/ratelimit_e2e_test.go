package main

import (
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestRateLimitEndToEnd: a real orderd with quotas of 0.5 requests per
// second in bursts of 5 lets a client send 5 requests at once and refuses
// the next with a 429 rate_limited problem that openapi.yaml describes,
// with Retry-After and the RateLimit fields; probes and metrics are never
// limited; another client has a bucket of its own; after Retry-After the
// client is served again. A token comes back every 2 s, so the test holds
// on a slow machine: it counts the tokens that can have come back while it
// ran.
func TestRateLimitEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	s := start(t, "", map[string]string{"ORDERD_RATE_LIMIT": "0.5", "ORDERD_RATE_BURST": "5"})
	began := time.Now()
	cust := s.registerCustomer(t, "quota@example.com")
	path := "/v1/customers/" + cust.ID.String()
	read := path + "?min_version=1" // the projection may not have it yet
	allowed := 1
	var refused response
	for range 20 {
		r := s.call(t, "GET", read, nil, nil, true) // checked against openapi.yaml
		if r.Status == http.StatusTooManyRequests {
			refused = r
			break
		}
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
		}
		if !regexp.MustCompile(`^"client";r=[0-4];t=[12]$`).MatchString(r.Header.Get("RateLimit")) {
			t.Fatalf("request %d: RateLimit %q", allowed+1, r.Header.Get("RateLimit"))
		}
		allowed++
	}
	if refused.Status == 0 {
		t.Fatalf("%d requests served, none refused", allowed)
	}
	// 5 at once, and one more for each 2 s the requests took.
	if most := 5 + int(time.Since(began)/(2*time.Second)); allowed < 5 || allowed > most {
		t.Errorf("%d requests served before the first 429, want 5 to %d", allowed, most)
	}
	p := refused.problem(t)
	if p.Code != "rate_limited" || p.Status != 429 || p.Type != "urn:orderd:problem:rate_limited" || p.Instance != path {
		t.Errorf("problem %+v", p)
	}
	after, err := strconv.Atoi(refused.Header.Get("Retry-After"))
	if err != nil || after < 1 || after > 2 {
		t.Fatalf("Retry-After %q, want 1 or 2 (a token every 2 s)", refused.Header.Get("Retry-After"))
	}
	if got, want := refused.Header.Get("RateLimit"), `"client";r=0;t=`+strconv.Itoa(after); got != want {
		t.Errorf("RateLimit %q, want %q", got, want)
	}
	if got := refused.Header.Get("RateLimit-Policy"); got != `"client";q=5;w=10` {
		t.Errorf("RateLimit-Policy %q, want \"client\";q=5;w=10 (0.5/s over the 10 s the bucket takes to fill)", got)
	}

	for _, exempt := range []string{"/healthz", "/readyz", "/metrics", "/openapi.yaml", "/asyncapi.yaml"} {
		for range 3 {
			resp, err := s.http.Get(s.base + exempt)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Header.Get("RateLimit") != "" {
				t.Errorf("%s while rate limited: %d, RateLimit %q", exempt, resp.StatusCode, resp.Header.Get("RateLimit"))
			}
		}
	}

	// 127.0.0.2 is loopback too, and another client.
	other := *s
	other.http = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}}
	defer other.http.CloseIdleConnections()
	if r := other.call(t, "GET", read, nil, nil, true); r.Status != http.StatusOK || r.Header.Get("RateLimit") != `"client";r=4;t=2` {
		t.Errorf("another client: %d, RateLimit %q, want 200 with \"client\";r=4;t=2", r.Status, r.Header.Get("RateLimit"))
	}

	m := s.metrics(t)
	if m[`orderd_rate_limited_total{family="customers"}`] < 1 || m[`orderd_rate_limit_clients`] < 2 {
		t.Errorf("/metrics: refused %v, clients %v; want at least 1 and 2", m[`orderd_rate_limited_total{family="customers"}`], m[`orderd_rate_limit_clients`])
	}

	time.Sleep(time.Duration(after) * time.Second)
	if r := s.call(t, "GET", path, nil, nil, true); r.Status != http.StatusOK {
		t.Errorf("after Retry-After: %d %s", r.Status, r.Body)
	}
}

// TestConfigRateLimit: quotas are off by default, the burst defaults to
// twice the rate (at least 1), and values orderd cannot use are refused
// with the setting at fault.
func TestConfigRateLimit(t *testing.T) {
	for _, c := range []struct {
		env   map[string]string
		rate  float64
		burst int
	}{
		{nil, 0, 0},
		{map[string]string{"ORDERD_RATE_LIMIT": "100"}, 100, 200},
		{map[string]string{"ORDERD_RATE_LIMIT": "0.2"}, 0.2, 1},
		{map[string]string{"ORDERD_RATE_LIMIT": "0.7"}, 0.7, 2},
		{map[string]string{"ORDERD_RATE_LIMIT": "5", "ORDERD_RATE_BURST": "1"}, 5, 1},
	} {
		cfg, err := parseConfig(nil, envOf(c.env), io.Discard)
		if err != nil || cfg.rateLimit != c.rate || cfg.rateBurst != c.burst {
			t.Errorf("%v: %v/s burst %d (%v), want %v/s burst %d", c.env, cfg.rateLimit, cfg.rateBurst, err, c.rate, c.burst)
		}
	}
	for _, c := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{env: map[string]string{"ORDERD_RATE_LIMIT": "fast"}, want: `ORDERD_RATE_LIMIT: "fast" is not a number of requests per second such as 100 or 0.5`},
		{args: []string{"-rate-limit", "NaN"}, want: `-rate-limit: "NaN" is not a number of requests per second such as 100 or 0.5`},
		{env: map[string]string{"ORDERD_RATE_LIMIT": "-1"}, want: `ORDERD_RATE_LIMIT: "-1" is negative (0 turns the rate limit off)`},
		{env: map[string]string{"ORDERD_RATE_LIMIT": "2e6"}, want: `ORDERD_RATE_LIMIT: "2e6" is more than 1000000 requests per second (0 turns the rate limit off)`},
		{env: map[string]string{"ORDERD_RATE_LIMIT": "0.0001"}, want: `ORDERD_RATE_LIMIT: "0.0001" is less than 0.001 requests per second (one every 1000s)`},
		{env: map[string]string{"ORDERD_RATE_LIMIT": "10", "ORDERD_RATE_BURST": "0"}, want: `ORDERD_RATE_BURST: "0" is not a whole number of 1 or more`},
		{args: []string{"-rate-burst", "10"}, want: `-rate-burst is set but -rate-limit is 0: with no rate limit a burst means nothing`},
		{env: map[string]string{"ORDERD_RATE_LIMIT": "0", "ORDERD_RATE_BURST": "3"}, want: `ORDERD_RATE_BURST is set but ORDERD_RATE_LIMIT is 0: with no rate limit a burst means nothing`},
	} {
		_, err := parseConfig(c.args, envOf(c.env), io.Discard)
		if err == nil || err.Error() != c.want {
			t.Errorf("%v %v: %v\nwant %s", c.env, c.args, err, c.want)
		}
	}
}

// BenchmarkCreateOrderRateLimit is BenchmarkCreateOrder with quotas off and
// on (at a million requests per second, which never refuses: what is
// measured is the bucket's cost), side by side in one run. Every request
// comes from 127.0.0.1, one client: the contended case, one bucket for 64
// connections.
func BenchmarkCreateOrderRateLimit(b *testing.B) {
	for _, c := range []struct{ name, limit string }{{"off", "0"}, {"on", "1000000"}} {
		b.Run(c.name, func(b *testing.B) {
			s := start(b, "", map[string]string{"ORDERD_LOG_LEVEL": "error", "ORDERD_RATE_LIMIT": c.limit})
			cust := s.registerCustomer(b, "bench@example.com").ID
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 128}}
			defer client.CloseIdleConnections()
			cpu0 := cpuTime(b)
			n := parallelLoad(b, "cmds", func(int) (time.Duration, error) {
				body := `{"customer_id":"` + cust.String() + `","items":[{"product_id":"` + uuid.NewString() + `","quantity":2}]}`
				t0 := time.Now()
				_, err := post(client, s.base+"/v1/orders", body)
				return time.Since(t0), err
			})
			// The CPU this process (server and clients) spent a command: on
			// a shared machine steadier than the throughput.
			b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(n), "cpu-µs/cmd")
		})
	}
}
