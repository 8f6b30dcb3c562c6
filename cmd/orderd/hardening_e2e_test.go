package main

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/relay/kafkatest"
)

// TestHardeningConnectionFlood opens 20,000 connections to orderd from two
// helper processes (each process has its own open-file limit) and holds
// them, silent or idle after one request, as a flood would, while /healthz
// and a command are asked on fresh connections: each answers within 1 s
// throughout, and the server never holds more connections than its cap.
func TestHardeningConnectionFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 20,000 connections")
	}
	const flooders, each, limit = 2, 10000, 1024
	s := start(t, "", map[string]string{"ORDERD_MAX_CONNS": fmt.Sprint(limit)})
	cust := s.registerCustomer(t, "flood@example.com")

	floodDone := make(chan string, flooders)
	for range flooders {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHardeningFloodHelper$")
		cmd.Env = append(os.Environ(), "ORDERD_FLOOD_ADDR="+strings.TrimPrefix(s.base, "http://"), fmt.Sprintf("ORDERD_FLOOD_COUNT=%d", each))
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { stdin.Close(); _ = cmd.Wait() }) // closing stdin ends it
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if line := sc.Text(); strings.HasPrefix(line, "flood:") {
					floodDone <- line
				}
			}
		}()
	}

	// Fresh connections each time, as a load balancer's checks come.
	probe := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer probe.CloseIdleConnections()
	checks, slowest, finished := 0, time.Duration(0), 0
	deadline := time.Now().Add(2 * time.Minute)
	for finished < flooders {
		select {
		case line := <-floodDone:
			t.Log(line)
			finished++
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the flood did not end within 2 minutes")
		}
		t0 := time.Now()
		resp, err := probe.Get(s.base + "/healthz")
		if err != nil {
			t.Fatalf("healthz during the flood: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("healthz during the flood: %d", resp.StatusCode)
		}
		slowest = max(slowest, time.Since(t0))
		checks++
		if checks%10 == 0 {
			body := fmt.Sprintf(`{"customer_id":%q,"items":[{"product_id":%q,"quantity":1}]}`, cust.ID, uuid.NewString())
			resp, err := probe.Post(s.base+"/v1/orders", "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatalf("a command during the flood: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("a command during the flood: %d", resp.StatusCode)
			}
		}
	}
	m := s.metrics(t)
	t.Logf("%d health checks, the slowest %s; server: %v connections open, %v evicted, %v refused",
		checks, slowest, m["orderd_http_connections"], m["orderd_http_connections_evicted_total"], m["orderd_http_connections_refused_total"])
	if open := m["orderd_http_connections"]; open > limit {
		t.Errorf("%v connections open, over the cap of %d", open, limit)
	}
	if m["orderd_http_connections_evicted_total"] == 0 {
		t.Errorf("no connection evicted at the cap")
	}
}

// TestHardeningFloodHelper is one flooder of TestHardeningConnectionFlood,
// run as a process of its own: it opens ORDERD_FLOOD_COUNT connections to
// ORDERD_FLOOD_ADDR (every other one sends a request first and then stays
// idle), says so on stdout, and holds them until stdin closes.
func TestHardeningFloodHelper(t *testing.T) {
	addr := os.Getenv("ORDERD_FLOOD_ADDR")
	if addr == "" {
		t.Skip("a helper process of TestHardeningConnectionFlood")
	}
	count, _ := strconv.Atoi(os.Getenv("ORDERD_FLOOD_COUNT"))
	var (
		mu     sync.Mutex
		held   []net.Conn
		failed atomic.Int64
		next   atomic.Int64
		wg     sync.WaitGroup
	)
	for range 50 {
		wg.Go(func() {
			d := net.Dialer{Timeout: 3 * time.Second}
			for i := next.Add(1); i <= int64(count); i = next.Add(1) {
				c, err := d.Dial("tcp", addr)
				if err != nil {
					failed.Add(1)
					continue
				}
				if i%2 == 0 {
					_ = c.SetDeadline(time.Now().Add(2 * time.Second))
					_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
					_, _ = c.Read(make([]byte, 512))
				}
				mu.Lock()
				held = append(held, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	fmt.Printf("flood: %d connections opened and held, %d dials failed\n", len(held), failed.Load())
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range held {
		c.Close()
	}
}

// TestHardeningEchoes: a 10 KB X-Correlation-ID and an 8 KB path are
// answered with problems of under 1 KB that quote a short, escaped prefix
// of them (TestHeaderLimit: a head over 16 KiB is refused before any
// handler runs).
func TestHardeningEchoes(t *testing.T) {
	s := start(t, "", nil)
	raw := func(method, path string, header map[string]string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, s.base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := s.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}

	long := strings.Repeat("\u202eX", 10*1024/4) // 10 KB of bidi overrides and letters
	r := s.call(t, "GET", "/healthz", nil, map[string]string{"X-Correlation-ID": long}, false)
	if p := r.problem(t); r.Status != http.StatusBadRequest || p.Code != "invalid_correlation_id" {
		t.Fatalf("a 10 KB X-Correlation-ID: %d %s", r.Status, r.Body)
	}
	if len(r.Body) >= 1024 || strings.Contains(string(r.Body), "\u202e") {
		t.Fatalf("a 10 KB X-Correlation-ID is echoed in %d bytes: %s", len(r.Body), r.Body)
	}

	for _, path := range []string{
		"/v1/orders/" + strings.Repeat("a", 8*1024),             // an id that is no UUID
		"/" + strings.Repeat("%0a", 8*1024/3),                   // no route, control characters
		"/v1/orders?min_version=" + strings.Repeat("9", 8*1024), // a query value
	} {
		status, body := raw("GET", path, nil)
		if status < 400 || status >= 500 || len(body) >= 1024 || strings.Contains(strings.TrimSpace(string(body)), "\n") {
			t.Errorf("GET %.40s… (%d bytes): %d, %d bytes: %s", path, len(path), status, len(body), body)
		}
	}
	r = s.call(t, "GET", "/v1/orders/"+uuid.NewString()+"?min_version="+strings.Repeat("x", 8*1024), nil, nil, false)
	if r.Status != http.StatusBadRequest || len(r.Body) >= 1024 {
		t.Errorf("an 8 KB min_version: %d, %d bytes: %s", r.Status, len(r.Body), r.Body)
	}
}

// TestHeaderLimit: the documented 16 KiB bound on a request's head
// (request line and headers) holds to the byte: a head of 16,384 bytes is
// served, one of 16,385 or 20,000 is answered 431 before any handler runs.
// (http.Server adds 4 KiB of slack to MaxHeaderBytes; a 20,000-byte header
// once went through.)
func TestHeaderLimit(t *testing.T) {
	s := start(t, "", nil)
	for _, c := range []struct{ size, status int }{
		{1000, http.StatusOK},
		{headerLimit - 1, http.StatusOK},
		{headerLimit, http.StatusOK},
		{headerLimit + 1, http.StatusRequestHeaderFieldsTooLarge},
		{20000, http.StatusRequestHeaderFieldsTooLarge},
	} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(s.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		head := "GET /healthz HTTP/1.1\r\nHost: orderd\r\nX-Padding: "
		head += strings.Repeat("p", c.size-len(head)-len("\r\n\r\n")) + "\r\n\r\n"
		if _, err := conn.Write([]byte(head)); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		conn.Close()
		if err != nil {
			t.Fatalf("a %d-byte head: %v", len(head), err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("a %d-byte head: %d, want %d", len(head), resp.StatusCode, c.status)
		}
	}
}

// TestHardeningLagAtStart: with the broker unreachable at start, /readyz
// and /metrics show the relay's lag from its saved progress in their very
// first answer (not the whole log, as when the relay's progress was only
// known once it had started).
func TestHardeningLagAtStart(t *testing.T) {
	dir := t.TempDir()
	s1 := start(t, dir, nil) // relay off: the outbox keeps everything
	cust := s1.registerCustomer(t, "lag@example.com")
	for range 3 {
		s1.createOrder(t, cust.ID)
	}
	if err := s1.stop(); err != nil {
		t.Fatal(err)
	}
	head := scalar(t, filepath.Join(dir, "events.db"), `SELECT max(position) FROM events`)
	// The relay published the first two events in an earlier life.
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO feed_progress (consumer, position) VALUES ('relay', 2)
		ON CONFLICT (consumer) DO UPDATE SET position = 2`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close() // nothing listens there now
	s2 := start(t, dir, kafkaEnv(t, []string{closed}))
	var ready struct {
		Status     string
		Components map[string]struct {
			Status     string
			Lag        *int64
			LagSeconds *float64 `json:"lag_seconds"`
		}
	}
	s2.do(t, "GET", "/readyz", nil, http.StatusOK).json(t, &ready)
	if c := ready.Components["relay"]; c.Lag == nil || *c.Lag != head-2 || c.LagSeconds == nil || *c.LagSeconds <= 0 {
		t.Errorf("the first /readyz: relay %+v, want a lag of %d events", c, head-2)
	}
	m := s2.metrics(t)
	if got := m[`orderd_feed_lag_events{consumer="relay"}`]; got != float64(head-2) {
		t.Errorf("the first /metrics: relay lag %v events, want %d", got, head-2)
	}
	if got := m[`orderd_feed_lag_seconds{consumer="relay"}`]; got <= 0 || got > 600 {
		t.Errorf("the first /metrics: relay lag %v s", got)
	}
}

// TestHardeningSIGTERMUnderLoad sends SIGTERM to orderd while clients
// create orders and the relay publishes them to Kafka, five times: each
// time the process exits 0 with the relay's and the projector's saved
// progress at the store's head, the wave in flight finished rather than
// abandoned. (Before the drain, the relay's progress was left behind the
// head in one run of three or more.)
func TestHardeningSIGTERMUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	brokers := kafkatest.Brokers(t)
	for run := range 5 {
		dir := t.TempDir()
		p := startProcess(t, dir, kafkaEnv(t, brokers))
		s := p.client(t, dir)
		cust := s.registerCustomer(t, fmt.Sprintf("sigterm%d@example.com", run))
		body := fmt.Sprintf(`{"customer_id":%q,"items":[{"product_id":%q,"quantity":1}]}`, cust.ID, uuid.NewString())
		var acked atomic.Int64
		ctx, stopLoad := context.WithCancel(context.Background())
		var load sync.WaitGroup
		for range 32 {
			load.Go(func() {
				for ctx.Err() == nil {
					resp, err := s.http.Post(s.base+"/v1/orders", "application/json", strings.NewReader(body))
					if err != nil {
						return // shutting down
					}
					resp.Body.Close()
					if resp.StatusCode == http.StatusCreated {
						acked.Add(1)
					}
				}
			})
		}
		time.Sleep(1500 * time.Millisecond)
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- p.cmd.Wait() }()
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("run %d: orderd after SIGTERM: %v", run, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("run %d: orderd did not exit within 30 s of SIGTERM", run)
		}
		stopLoad()
		load.Wait()
		events := filepath.Join(dir, "events.db")
		head := scalar(t, events, `SELECT max(position) FROM events`)
		relayed := scalar(t, events, `SELECT position FROM feed_progress WHERE consumer = 'relay'`)
		projected := scalar(t, events, `SELECT position FROM feed_progress WHERE consumer = 'projector'`)
		t.Logf("run %d: %d creates acknowledged; head %d, relay %d, projector %d", run, acked.Load(), head, relayed, projected)
		if relayed != head || projected != head {
			t.Errorf("run %d: after SIGTERM under load: head %d, relay progress %d, projector progress %d", run, head, relayed, projected)
		}
	}
}
