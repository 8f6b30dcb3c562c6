package main

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
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
	var lat, ryw []time.Duration
	b.SetParallelism(32)
	b.ResetTimer()
	began := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var mine, mineRYW []time.Duration
		for n := 0; pb.Next(); n++ {
			body := fmt.Sprintf(`{"customer_id":%q,"items":[{"product_id":%q,"quantity":2}]}`, cust, uuid.NewString())
			t0 := time.Now()
			id, err := post(client, s.base+"/v1/orders", body)
			acked := time.Now()
			if err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, acked.Sub(t0))
			if n%16 == 0 {
				if err := get(client, s.base+"/v1/orders/"+id+"?min_version=1"); err != nil {
					b.Error(err)
					return
				}
				mineRYW = append(mineRYW, time.Since(acked))
			}
		}
		mu.Lock()
		lat, ryw = append(lat, mine...), append(ryw, mineRYW...)
		mu.Unlock()
	})
	elapsed := time.Since(began)
	b.StopTimer()
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "cmds/s")
	reportPercentiles(b, "", lat)
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

	var mu sync.Mutex
	var lat []time.Duration
	b.SetParallelism(32)
	b.ResetTimer()
	began := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for n := 0; pb.Next(); n++ {
			t0 := time.Now()
			if err := get(client, s.base+"/v1/orders/"+ids[(n*7919+int(t0.UnixNano()))%len(ids)]); err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(began)
	b.StopTimer()
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "reads/s")
	reportPercentiles(b, "", lat)
}
