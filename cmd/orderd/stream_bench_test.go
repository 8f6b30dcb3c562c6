package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkCommandsWithStreamClients is BenchmarkCreateOrder's load (64
// concurrent clients sending CreateOrder to a real orderd on loopback) with
// 0 and with 100 clients of GET /v1/events/stream connected, reading every
// event, side by side in one run. Besides throughput and latency it
// reports how many stream clients were dropped and the events each stream
// client got per command (1 when every client got every event).
func BenchmarkCommandsWithStreamClients(b *testing.B) {
	for _, clients := range []int{0, 100} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			s := start(b, "", map[string]string{"ORDERD_LOG_LEVEL": "error"})
			readers := make([]*atomic.Int64, clients)
			for i := range readers {
				readers[i] = countStream(b, s)
			}
			sent := benchCreate(b, s, false)
			if clients == 0 {
				return
			}
			// Every reader should get the customer and every order.
			want := int64(sent + 1)
			deadline := time.Now().Add(30 * time.Second)
			var got int64
			for _, r := range readers {
				for r.Load() < want && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				got += r.Load()
			}
			b.ReportMetric(float64(got)/float64(want*int64(clients)), "delivered/event")
			b.ReportMetric(float64(streamDropped(b, s)), "dropped")
		})
	}
}

// countStream opens a stream from the start and counts its events as it
// reads them.
func countStream(b *testing.B, s *service) *atomic.Int64 {
	b.Helper()
	resp, err := http.Get(s.base + "/v1/events/stream?after=0")
	if err != nil {
		b.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("stream: %d", resp.StatusCode)
	}
	b.Cleanup(func() { resp.Body.Close() })
	n := new(atomic.Int64)
	go func() {
		r := bufio.NewReaderSize(resp.Body, 64<<10)
		for {
			line, err := r.ReadSlice('\n')
			if bytes.HasPrefix(line, []byte("id: ")) {
				n.Add(1)
			}
			if err != nil && err != bufio.ErrBufferFull {
				return
			}
		}
	}()
	return n
}

// streamDropped reads orderd_stream_clients_dropped_total from /metrics.
func streamDropped(b *testing.B, s *service) float64 {
	b.Helper()
	resp, err := http.Get(s.base + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	for line := range strings.Lines(string(raw)) {
		var v float64
		if _, err := fmt.Sscanf(line, "orderd_stream_clients_dropped_total %g", &v); err == nil {
			return v
		}
	}
	b.Fatal("no orderd_stream_clients_dropped_total in /metrics")
	return 0
}
