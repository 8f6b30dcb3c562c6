package main

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// streamEvent is one message of GET /v1/events/stream.
type streamEvent struct {
	ID   int64
	Type string
	Data struct {
		envelope
		Position int64 `json:"position"`
	}
}

// openStream starts GET /v1/events/stream?after=after on a client of its
// own (s.http's timeout would cut the stream) and hands its events to the
// channel it returns, which is closed when the stream ends.
func openStream(t testing.TB, s *service, after int64) <-chan streamEvent {
	t.Helper()
	req, err := http.NewRequest("GET", s.base+"/v1/events/stream?after="+strconv.FormatInt(after, 10), nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		resp.Body.Close()
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	t.Cleanup(func() { resp.Body.Close() })
	out := make(chan streamEvent, 1024)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var ev streamEvent
		for sc.Scan() {
			field, value, _ := strings.Cut(sc.Text(), ": ")
			switch field {
			case "id":
				ev.ID, _ = strconv.ParseInt(value, 10, 64)
			case "event":
				ev.Type = value
			case "data":
				_ = json.Unmarshal([]byte(value), &ev.Data)
			case "":
				if sc.Text() == "" && ev.ID != 0 {
					out <- ev
					ev = streamEvent{}
				}
			}
		}
	}()
	return out
}

// TestStreamEndToEnd: orderd on SQLite streams the walkthrough's events as
// they are committed, with the envelope GET /v1/orders/{id}/events shows,
// and a graceful stop ends the stream at once instead of waiting for the
// shutdown timeout.
func TestStreamEndToEnd(t *testing.T) {
	s := start(t, "", nil)
	s.do(t, "HEAD", "/v1/events/stream", nil, http.StatusOK)
	events := openStream(t, s, 0)
	cust := s.registerCustomer(t, "stream@example.com")
	order := s.createOrder(t, cust.ID)
	s.do(t, "POST", "/v1/orders/"+order.ID.String()+"/confirm", nil, http.StatusOK)

	stored := s.events(t, "orders", order.ID)
	var got []streamEvent
	for len(got) < 3 {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("the stream ended after %d events", len(got))
			}
			got = append(got, ev)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d events within 10 s", len(got))
		}
	}
	want := []struct {
		typ string
		agg uuid.UUID
	}{{"CustomerRegistered", cust.ID}, {"OrderCreated", order.ID}, {"OrderConfirmed", order.ID}}
	for i, ev := range got {
		if ev.Type != want[i].typ || ev.Data.AggregateID != want[i].agg || ev.Data.Position != ev.ID {
			t.Errorf("event %d: %s of %s at %d (data %d), want %s of %s", i, ev.Type, ev.Data.AggregateID, ev.ID, ev.Data.Position, want[i].typ, want[i].agg)
		}
		if i > 0 && ev.ID <= got[i-1].ID {
			t.Errorf("positions not increasing: %d after %d", ev.ID, got[i-1].ID)
		}
	}
	if got[1].Data.EventID != stored[0].EventID || got[2].Data.CorrelationID != stored[1].CorrelationID ||
		got[1].Data.Data["customer_id"] != cust.ID.String() {
		t.Errorf("the stream's envelopes differ from the history's: %+v, %+v", got[1].Data, stored[0])
	}

	began := time.Now()
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	// The shutdown timeout is 15 s: a stream that held the drain would
	// take all of it.
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("stopping with a stream open took %v", took)
	}
	select {
	case _, ok := <-events:
		if ok {
			t.Error("an event after the last")
		}
	case <-time.After(5 * time.Second):
		t.Error("the stream did not end with orderd")
	}
}
