package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd"
	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/api/apitest"
	"github.com/orderd/orderd/internal/sqlite"
)

// streamed is a real API on a SQLite store in a temporary directory, with
// the event stream.
type streamed struct {
	base     string
	commands string // where register sends its commands
	st       *Stream
	events   *sqlite.Store
	http     *http.Client
}

// newStreamed starts the server; tune, when set, adjusts the http.Server
// (its timeouts, its listener) before it starts. The commands then go to
// a second server, on the same stores, that is not tuned: a 200 ms write
// timeout meant for the stream cut a registration short on a loaded
// machine (CI12: EOF).
func newStreamed(t *testing.T, opts StreamOptions, tune func(*httptest.Server)) *streamed {
	t.Helper()
	events, err := sqlite.OpenStore(filepath.Join(t.TempDir(), "events.db"), sqlite.Options{Upcaster: aggregate.Upcasters()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = events.Close() })
	st := NewStream(events, opts, nil, zap.NewNop())
	srv := New(aggregate.NewHandler(events, time.Now, aggregate.WithEmailClaims(events.EmailClaims())), nil, events, nil, orderd.OpenAPI, zap.NewNop()).WithStream(st)
	ts := httptest.NewUnstartedServer(srv.Handler())
	if tune != nil {
		tune(ts)
	}
	ts.Start()
	t.Cleanup(ts.Close)
	t.Cleanup(st.Stop) // before ts.Close, which waits for the streams
	commands := ts.URL
	if tune != nil {
		plain := httptest.NewServer(srv.Handler())
		t.Cleanup(plain.Close)
		commands = plain.URL
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(client.CloseIdleConnections)
	return &streamed{base: ts.URL, commands: commands, st: st, events: events, http: client}
}

// register registers a customer over HTTP and returns its id.
func (s *streamed) register(t testing.TB) uuid.UUID {
	t.Helper()
	body := fmt.Sprintf(`{"email":%q,"first_name":"Ann","last_name":"Lee"}`, uuid.NewString()+"@example.com")
	resp, err := s.http.Post(s.commands+"/v1/customers", "application/json", strings.NewReader(body))
	if err != nil {
		t.Error(err)
		return uuid.Nil
	}
	defer resp.Body.Close()
	var out struct{ ID uuid.UUID }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusCreated {
		t.Errorf("register: %d %v", resp.StatusCode, err)
	}
	return out.ID
}

// published returns the positions of the stored events the stream shows.
func (s *streamed) published(t *testing.T) []int64 {
	t.Helper()
	ctx := context.Background()
	head, err := s.events.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for after := int64(0); after < head; {
		evs, err := s.events.ReadFeed(ctx, after, 500)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.AggregateType != aggregate.EmailClaimType {
				out = append(out, e.Position)
			}
		}
		after = evs[len(evs)-1].Position
	}
	return out
}

type sseEvent struct {
	id   int64
	typ  string
	data struct {
		Position    int64     `json:"position"`
		EventType   string    `json:"event_type"`
		AggregateID uuid.UUID `json:"aggregate_id"`
		Sequence    int64     `json:"sequence"`
	}
}

// sseClient reads one stream in the background.
type sseClient struct {
	resp   *http.Response
	events chan sseEvent // closed at the stream's end
	mu     sync.Mutex
	pings  int
	marks  []int64 // ids sent without an event (?after=now's start)
}

// open starts a stream with the query and the headers given (name, value,
// …) and expects 200.
func (s *streamed) open(t *testing.T, query string, header ...string) *sseClient {
	t.Helper()
	req, err := http.NewRequest("GET", s.base+"/v1/events/stream"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("stream%s: %d %s", query, resp.StatusCode, raw)
	}
	for k, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	c := &sseClient{resp: resp, events: make(chan sseEvent, 100000)}
	t.Cleanup(c.close)
	go c.read(t)
	return c
}

func (c *sseClient) close() { c.resp.Body.Close() }

func (c *sseClient) sentMarks() []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.marks)
}

func (c *sseClient) read(t *testing.T) {
	defer close(c.events)
	sc := bufio.NewScanner(c.resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var ev sseEvent
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, ":") {
			c.mu.Lock()
			c.pings++
			c.mu.Unlock()
			continue
		}
		field, value, _ := strings.Cut(line, ": ")
		switch field {
		case "":
			if ev.id != 0 && ev.typ == "" {
				c.mu.Lock()
				c.marks = append(c.marks, ev.id)
				c.mu.Unlock()
				ev = sseEvent{}
			} else if ev.id != 0 {
				c.events <- ev
				ev = sseEvent{}
			}
		case "id":
			ev.id, _ = strconv.ParseInt(value, 10, 64)
		case "event":
			ev.typ = value
		case "data":
			if err := json.Unmarshal([]byte(value), &ev.data); err != nil {
				t.Errorf("data %q: %v", value, err)
			}
		default:
			t.Errorf("unexpected line %q", line)
		}
	}
}

// take returns the next n events, failing the test when they do not come
// within the timeout. Each event's id, data position and type must agree.
func (c *sseClient) take(t *testing.T, n int, timeout time.Duration) []sseEvent {
	t.Helper()
	var out []sseEvent
	deadline := time.After(timeout)
	for len(out) < n {
		select {
		case ev, ok := <-c.events:
			if !ok {
				t.Fatalf("the stream ended after %d of %d events", len(out), n)
			}
			if ev.id != ev.data.Position || ev.typ != ev.data.EventType {
				t.Fatalf("id %d event %s, data says %d %s", ev.id, ev.typ, ev.data.Position, ev.data.EventType)
			}
			out = append(out, ev)
		case <-deadline:
			t.Fatalf("%d of %d events within %v", len(out), n, timeout)
		}
	}
	return out
}

// ended waits for the stream's end.
func (c *sseClient) ended(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case _, ok := <-c.events:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("the stream did not end within %v", timeout)
		}
	}
}

func positions(evs []sseEvent) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.id
	}
	return out
}

// TestStreamCatchUpThenLive: a stream from ?after=0 first hands the stored
// events, then the new ones as they are committed, each with its position
// as id, and never an email claim.
func TestStreamCatchUpThenLive(t *testing.T) {
	s := newStreamed(t, StreamOptions{}, nil)
	var ids []uuid.UUID
	for range 5 {
		ids = append(ids, s.register(t))
	}
	c := s.open(t, "?after=0")
	got := c.take(t, 5, 10*time.Second)
	for range 5 {
		ids = append(ids, s.register(t))
	}
	got = append(got, c.take(t, 5, 10*time.Second)...)
	for i, e := range got {
		if e.data.AggregateID != ids[i] || e.typ != "CustomerRegistered" || e.data.Sequence != 1 {
			t.Errorf("event %d: %s of %s seq %d, want CustomerRegistered of %s", i, e.typ, e.data.AggregateID, e.data.Sequence, ids[i])
		}
	}
	if want := s.published(t); !slices.Equal(positions(got), want) {
		t.Errorf("positions %v, want %v", positions(got), want)
	}

	// From the middle: only what comes after.
	mid := got[6].id
	c2 := s.open(t, "?after="+strconv.FormatInt(mid, 10))
	if rest := c2.take(t, 3, 10*time.Second); !slices.Equal(positions(rest), positions(got[7:])) {
		t.Errorf("after %d: %v, want %v", mid, positions(rest), positions(got[7:]))
	}
}

// TestStreamFromNow: ?after=now starts at the head when the request
// comes: the stream first names that position (an id without data, so
// that an EventSource reconnecting before any event resumes there), then
// hands only the events committed later. Last-Event-ID still wins.
func TestStreamFromNow(t *testing.T) {
	s := newStreamed(t, StreamOptions{}, nil)
	for range 3 {
		s.register(t)
	}
	head, err := s.events.Head(context.Background())
	if err != nil || head == 0 {
		t.Fatalf("head %d, %v", head, err)
	}
	c := s.open(t, "?after=now")
	waitFor(t, "the stream's starting id", func() bool { return len(c.sentMarks()) > 0 })
	if m := c.sentMarks(); !slices.Equal(m, []int64{head}) {
		t.Fatalf("?after=now started with ids %v, want the head %d", m, head)
	}
	id := s.register(t)
	got := c.take(t, 1, 10*time.Second)
	if got[0].data.AggregateID != id || got[0].id <= head {
		t.Fatalf("first event: %s of %s at %d, want the new customer %s after %d", got[0].typ, got[0].data.AggregateID, got[0].id, id, head)
	}
	// A reconnection with the mark resumes right after it.
	again := s.open(t, "?after=now", "Last-Event-ID", strconv.FormatInt(head, 10))
	if ev := again.take(t, 1, 10*time.Second); ev[0].id != got[0].id {
		t.Fatalf("resumed at %d, want %d", ev[0].id, got[0].id)
	}
	if m := again.sentMarks(); len(m) != 0 {
		t.Errorf("a resumed stream sent ids without events: %v", m)
	}
}

// TestStreamResume: a client that reconnects with Last-Event-ID, to the
// URL it first asked (?after=0, as an EventSource does), goes on right
// after the last event it saw, with no gap and no duplicate, while commands
// keep coming.
func TestStreamResume(t *testing.T) {
	s := newStreamed(t, StreamOptions{}, nil)
	const total = 120
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range total {
			s.register(t)
		}
	}()
	var seen []sseEvent
	for round := 0; len(seen) < total; round++ {
		var c *sseClient
		if round == 0 {
			c = s.open(t, "?after=0")
		} else {
			c = s.open(t, "?after=0", "Last-Event-ID", strconv.FormatInt(seen[len(seen)-1].id, 10))
		}
		seen = append(seen, c.take(t, min(25, total-len(seen)), 20*time.Second)...)
		c.close() // mid-stream, with events still coming
	}
	<-done
	if want := s.published(t); !slices.Equal(positions(seen), want) {
		t.Errorf("across reconnects: %v,\nwant %v", positions(seen), want)
	}
}

// TestStreamManyClients: 50 clients, joining while commands run, each get
// every event in order, with nothing missed or repeated at the handoff
// from the store to the hub.
func TestStreamManyClients(t *testing.T) {
	s := newStreamed(t, StreamOptions{}, nil)
	const clients, writers, each = 50, 4, 40
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range each {
				s.register(t)
			}
		})
	}
	var cs []*sseClient
	for range clients {
		cs = append(cs, s.open(t, "?after=0"))
		time.Sleep(2 * time.Millisecond) // join at different points of the load
	}
	wg.Wait()
	want := s.published(t)
	if len(want) != writers*each {
		t.Fatalf("%d events stored, want %d", len(want), writers*each)
	}
	for i, c := range cs {
		if got := positions(c.take(t, len(want), 30*time.Second)); !slices.Equal(got, want) {
			t.Errorf("client %d: %v,\nwant %v", i, got, want)
		}
	}
	if n := s.st.Dropped(); n != 0 {
		t.Errorf("%d clients dropped", n)
	}
}

// smallBuffers makes the server's sockets send through a 4 KiB buffer, as
// on a congested link, so that a client that stops reading blocks the
// server's writes after a few events rather than after megabytes.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}

// stuckClient opens a stream from after with a 4 KiB receive buffer, then
// never reads.
func stuckClient(t *testing.T, base string, after int64) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := fmt.Fprintf(conn, "GET /v1/events/stream?after=%d HTTP/1.1\r\nHost: orderd\r\n\r\n", after); err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestStreamSlowClientDropped: a client that stops reading is dropped once
// its buffer is full, while commands go on at full speed and a client that
// reads gets every event. Commands per second without and with the stuck
// client are logged (-v); the test asserts on counts and on the drop.
func TestStreamSlowClientDropped(t *testing.T) {
	// Without lingering the hub sends a batch per commit or so: the buffer
	// of 4 overflows within the test's commands even on a fast machine.
	s := newStreamed(t, StreamOptions{Buffer: 4, Linger: time.Millisecond}, func(ts *httptest.Server) {
		ts.Listener = smallBuffers{ts.Listener}
	})
	const n = 300
	commands := func() time.Duration {
		start := time.Now()
		for range n {
			s.register(t)
		}
		return time.Since(start)
	}
	alone := commands()

	reader := s.open(t, "?after=0")
	// A live client: one stuck in its catch-up from the store holds up
	// nobody either, and ends when its write times out (WriteTimeout).
	head, err := s.events.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	stuck := stuckClient(t, s.base, head)
	waitFor(t, "two streams open", func() bool { return s.st.Clients() == 2 })
	withStuck := commands()
	if t.Failed() {
		t.FailNow() // some command failed
	}
	waitFor(t, "the stuck client dropped", func() bool { return s.st.Dropped() == 1 && s.st.Clients() == 1 })
	t.Logf("%d commands: %.0f/s without a stream client, %.0f/s with a reading and a stuck one",
		n, n/alone.Seconds(), n/withStuck.Seconds())
	// Not a timing test: only a stall (seconds per command) fails this.
	if withStuck > 10*alone+5*time.Second {
		t.Errorf("commands took %v with the stuck client, %v without", withStuck, alone)
	}
	if got, want := positions(reader.take(t, 2*n, 30*time.Second)), s.published(t); !slices.Equal(got, want) {
		t.Errorf("the reading client got %d events, want the %d stored", len(got), len(want))
	}
	// The stuck client's connection was ended: once it reads again, it
	// finds the end of what it was sent.
	_ = stuck.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, stuck); err != nil {
		t.Errorf("the stuck client's connection was not closed: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10 s: %s", what)
		}
	}
}

// TestStreamHeartbeat: an idle stream sends comments and outlives the
// server's read and write timeouts.
func TestStreamHeartbeat(t *testing.T) {
	s := newStreamed(t, StreamOptions{Heartbeat: 50 * time.Millisecond}, func(ts *httptest.Server) {
		ts.Config.ReadTimeout, ts.Config.WriteTimeout = 200*time.Millisecond, 200*time.Millisecond
	})
	c := s.open(t, "")
	time.Sleep(time.Second)
	id := s.register(t)
	if ev := c.take(t, 1, 10*time.Second)[0]; ev.data.AggregateID != id {
		t.Errorf("got %s, want %s", ev.data.AggregateID, id)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pings < 5 {
		t.Errorf("%d heartbeats in 1 s at 50 ms", c.pings)
	}
}

// TestStreamStop: Stop ends the open streams at once, and a stream asked
// for afterwards ends at once.
func TestStreamStop(t *testing.T) {
	s := newStreamed(t, StreamOptions{}, nil)
	s.register(t)
	c := s.open(t, "?after=0")
	c.take(t, 1, 10*time.Second)
	s.st.Stop()
	c.ended(t, 5*time.Second)
	s.open(t, "?after=0").ended(t, 5*time.Second)
	waitFor(t, "no stream counted", func() bool { return s.st.Clients() == 0 })
}

// TestStreamRefusals: bad positions (400), a store with no global order
// (501) and the client cap (503), each a problem that openapi.yaml allows.
func TestStreamRefusals(t *testing.T) {
	s := newStreamed(t, StreamOptions{MaxClients: 2}, nil)
	for _, c := range []struct {
		query, lastID string
		code, field   string
	}{
		{"?after=-1", "", "invalid_query", "after"},
		{"?after=abc", "", "invalid_query", "after"},
		{"?after=NOW", "", "invalid_query", "after"},
		{"?after=now&after=now", "", "invalid_query", "after"},
		{"?after=", "", "invalid_query", "after"},
		{"?after=1&after=2", "", "invalid_query", "after"},
		{"", "x", "invalid_last_event_id", "Last-Event-ID"},
		{"?after=3", "-4", "invalid_last_event_id", "Last-Event-ID"},
		{"?after=x", "4", "invalid_query", "after"}, // both are checked
	} {
		p := problemOf(t, s.base, c.query, c.lastID, http.StatusBadRequest)
		if p.Code != c.code || p.Field != c.field {
			t.Errorf("%s Last-Event-ID %q: %s (%s), want %s (%s)", c.query, c.lastID, p.Code, p.Field, c.code, c.field)
		}
	}

	// The cap: two streams open, the third is refused until one leaves.
	a, _ := s.open(t, ""), s.open(t, "")
	if p := problemOf(t, s.base, "", "", http.StatusServiceUnavailable); p.Code != "too_many_streams" {
		t.Errorf("third stream: %s", p.Code)
	}
	a.close()
	waitFor(t, "a stream slot free", func() bool { return s.st.Clients() == 1 })
	s.open(t, "")

	for name, srv := range map[string]*Server{
		"nil log":   New(nil, nil, nil, nil, orderd.OpenAPI, zap.NewNop()).WithStream(NewStream(nil, StreamOptions{}, nil, zap.NewNop())),
		"no stream": New(nil, nil, nil, nil, orderd.OpenAPI, zap.NewNop()),
	} {
		ts := httptest.NewServer(srv.Handler())
		p := problemOf(t, ts.URL, "?after=1", "", http.StatusNotImplemented)
		ts.Close()
		if p.Code != "stream_not_offered" {
			t.Errorf("%s: %s", name, p.Code)
		}
	}
}

// problemOf asks for the stream and expects a problem of status want that
// openapi.yaml allows.
func problemOf(t *testing.T, base, query, lastID string, want int) problemJSON {
	t.Helper()
	req, err := http.NewRequest("GET", base+"/v1/events/stream"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	return problemFor(t, req, want)
}

// problemAt GETs target and expects a problem of status want that
// openapi.yaml allows.
func problemAt(t *testing.T, target string, want int) problemJSON {
	t.Helper()
	req, err := http.NewRequest("GET", target, nil)
	if err != nil {
		t.Fatal(err)
	}
	return problemFor(t, req, want)
}

// problemFor sends req and expects a problem of status want that
// openapi.yaml allows.
func problemFor(t *testing.T, req *http.Request, want int) problemJSON {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req) // an accepted stream would never end
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	checkContract(t, req, resp, raw)
	var p problemJSON
	if err := json.Unmarshal(raw, &p); err != nil || resp.StatusCode != want {
		t.Fatalf("%s: %d %s, want %d", req.URL, resp.StatusCode, raw, want)
	}
	if want == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
		t.Errorf("%d without Retry-After", want)
	}
	return p
}

// TestStreamSlowCatchUpDropped: a client that starts far behind and stops
// reading is dropped once a write of its catch-up from the store takes
// longer than the write timeout, and is counted as dropped like one the
// hub drops.
func TestStreamSlowCatchUpDropped(t *testing.T) {
	s := newStreamed(t, StreamOptions{WriteTimeout: 300 * time.Millisecond}, func(ts *httptest.Server) {
		ts.Listener = smallBuffers{ts.Listener}
	})
	for range 200 {
		s.register(t)
	}
	stuck := stuckClient(t, s.base, 0)
	waitFor(t, "the stuck client dropped", func() bool { return s.st.Dropped() == 1 && s.st.Clients() == 0 })
	_ = stuck.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, stuck); err != nil {
		t.Errorf("the stuck client's connection was not closed: %v", err)
	}
	// A client that leaves is not dropped.
	c := s.open(t, "?after=0")
	c.take(t, 200, 10*time.Second)
	c.close()
	waitFor(t, "the reader gone", func() bool { return s.st.Clients() == 0 })
	if n := s.st.Dropped(); n != 1 {
		t.Errorf("%d clients counted dropped, want 1 (a client that leaves is not)", n)
	}
}

// TestStreamBeyondHead: a start position beyond the newest event, by
// after or Last-Event-ID, is refused with the head in the problem; the
// head itself is a valid start.
func TestStreamBeyondHead(t *testing.T) {
	s := newStreamed(t, StreamOptions{}, nil)
	s.register(t)
	head, err := s.events.Head(context.Background())
	if err != nil || head == 0 {
		t.Fatalf("head %d, %v", head, err)
	}
	for _, c := range []struct{ query, lastID, field string }{
		{fmt.Sprintf("?after=%d", head+1), "", "after"},
		{"?after=9223372036854775807", "", "after"},
		{"?after=0", strconv.FormatInt(head+1, 10), "Last-Event-ID"},
		{"", "1000000", "Last-Event-ID"},
	} {
		p := problemOf(t, s.base, c.query, c.lastID, http.StatusBadRequest)
		if p.Code != "position_beyond_head" || p.Field != c.field || p.Head == nil || *p.Head != head {
			t.Errorf("%s Last-Event-ID %q: %s (%s) head %v, want position_beyond_head (%s) head %d", c.query, c.lastID, p.Code, p.Field, p.Head, c.field, head)
		}
	}
	id := s.register(t)
	if ev := s.open(t, fmt.Sprintf("?after=%d", head)).take(t, 1, 10*time.Second)[0]; ev.data.AggregateID != id {
		t.Errorf("from the head: got %s, want %s", ev.data.AggregateID, id)
	}
	s.open(t, "", "Last-Event-ID", strconv.FormatInt(head, 10))
}

// checkContract fails the test unless resp, whose body is raw, is an
// answer to req that openapi.yaml allows (its status listed for the route).
func checkContract(t *testing.T, req *http.Request, resp *http.Response, raw []byte) {
	t.Helper()
	route, params, err := apitest.Contract(t, "http://"+req.URL.Host).FindRoute(req)
	if err != nil {
		t.Fatalf("%s %s is not in openapi.yaml: %v", req.Method, req.URL.Path, err)
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true, ExcludeRequestBody: true}}
	if err := openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Body: io.NopCloser(bytes.NewReader(raw)), Options: in.Options,
	}); err != nil {
		t.Errorf("%s: %d answer breaks openapi.yaml: %v\n%s", req.URL, resp.StatusCode, err, raw)
	}
}
