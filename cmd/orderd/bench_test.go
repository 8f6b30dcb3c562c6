package main

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
)

// BenchmarkCreateOrder is the load run of the HTTP command path: 64
// concurrent clients (b.SetParallelism on 2 cores) send CreateOrder to a real
// orderd on loopback, in this process, with the embedded store on disk.
// Besides ns/op it reports throughput, p50/p99 command latency, and the
// read-your-writes latency: for one command in 16, how long after its answer
// a GET with min_version first sees it (the projection lag plus one GET).
func BenchmarkCreateOrder(b *testing.B) {
	s := start(b, "", map[string]string{"ORDERD_LOG_LEVEL": "error"})
	cust := s.registerCustomer(b, "bench@example.com").ID
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 128}}
	defer client.CloseIdleConnections()

	var mu sync.Mutex
	var ryw []time.Duration
	parallelLoad(b, "cmds", func(n int) (time.Duration, error) {
		body := fmt.Sprintf(`{"customer_id":%q,"items":[{"product_id":%q,"quantity":2}]}`, cust, uuid.NewString())
		t0 := time.Now()
		id, err := post(client, s.base+"/v1/orders", body)
		acked := time.Now()
		if err != nil || n%16 != 0 {
			return acked.Sub(t0), err
		}
		if err := get(client, s.base+"/v1/orders/"+id+"?min_version=1"); err != nil {
			return 0, err
		}
		mu.Lock()
		ryw = append(ryw, time.Since(acked))
		mu.Unlock()
		return acked.Sub(t0), nil
	})
	reportPercentiles(b, "ryw-", ryw)
}

func reportPercentiles(b *testing.B, prefix string, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	at := func(q float64) float64 { return float64(d[int(q*float64(len(d)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(at(0.50), prefix+"p50-ms")
	b.ReportMetric(at(0.99), prefix+"p99-ms")
}

// parallelLoad is the load of the HTTP benchmarks: 64 goroutines (32 per
// core on 2 cores) run op until b.N, n counting each goroutine's calls.
// Each op times its own request and returns that duration; an error fails
// the benchmark and stops its goroutine. It reports the successful ops per
// second as unit/s and their p50/p99, and returns how many succeeded.
func parallelLoad(b *testing.B, unit string, op func(n int) (time.Duration, error)) int {
	var mu sync.Mutex
	var lat []time.Duration
	b.SetParallelism(32)
	b.ResetTimer()
	began := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for n := 0; pb.Next(); n++ {
			d, err := op(n)
			if err != nil {
				b.Error(err)
				break
			}
			mine = append(mine, d)
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(began)
	b.StopTimer()
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), unit+"/s")
	reportPercentiles(b, "", lat)
	return len(lat)
}

func post(c *http.Client, url, body string) (string, error) {
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("POST %s: %d %s", url, resp.StatusCode, raw)
	}
	// {"id":"<36 chars>",...}
	i := strings.Index(string(raw), `"id":"`)
	if i < 0 || len(raw) < i+6+36 {
		return "", fmt.Errorf("POST %s: no id in %s", url, raw)
	}
	return string(raw[i+6 : i+6+36]), nil
}

func get(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d", url, resp.StatusCode)
	}
	return nil
}

// BenchmarkGetOrder is the load run of the HTTP read path: 64 concurrent
// clients read random orders among 1,000 from the read model (no
// min_version), on a real orderd on loopback in this process. It reports
// reads/s and p50/p99 latency.
func BenchmarkGetOrder(b *testing.B) {
	s := start(b, "", map[string]string{"ORDERD_LOG_LEVEL": "error"})
	cust := s.registerCustomer(b, "bench-get@example.com").ID
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 128}}
	defer client.CloseIdleConnections()
	ids := make([]string, 1000)
	for i := range ids {
		id, err := post(client, s.base+"/v1/orders", fmt.Sprintf(`{"customer_id":%q,"items":[{"product_id":%q,"quantity":2}]}`, cust, uuid.NewString()))
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = id
	}
	if err := get(client, s.base+"/v1/orders/"+ids[len(ids)-1]+"?min_version=1"); err != nil {
		b.Fatal(err)
	}

	parallelLoad(b, "reads", func(n int) (time.Duration, error) {
		t0 := time.Now()
		err := get(client, s.base+"/v1/orders/"+ids[(n*7919+int(t0.UnixNano()))%len(ids)])
		return time.Since(t0), err
	})
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
