package main

import (
	"database/sql"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"testing"

	"github.com/google/uuid"
	_ "modernc.org/sqlite"
)

type commandResult struct {
	ID      uuid.UUID `json:"id"`
	Version int64     `json:"version"`
}

type orderBody struct {
	ID              uuid.UUID  `json:"id"`
	CustomerID      uuid.UUID  `json:"customer_id"`
	Status          string     `json:"status"`
	Items           []itemBody `json:"items"`
	TrackingNumber  *string    `json:"tracking_number"`
	Carrier         *string    `json:"carrier"`
	CancelledReason *string    `json:"cancelled_reason"`
	Version         int64      `json:"version"`
	CreatedAt       string     `json:"created_at"`
	UpdatedAt       string     `json:"updated_at"`
}

type itemBody struct {
	ProductID string `json:"product_id"`
	Quantity  int    `json:"quantity"`
}

type envelope struct {
	EventID       uuid.UUID         `json:"event_id"`
	AggregateID   uuid.UUID         `json:"aggregate_id"`
	AggregateType string            `json:"aggregate_type"`
	Sequence      int64             `json:"sequence"`
	EventType     string            `json:"event_type"`
	EventVersion  int               `json:"event_version"`
	Data          map[string]any    `json:"data"`
	CausationID   uuid.UUID         `json:"causation_id"`
	CorrelationID uuid.UUID         `json:"correlation_id"`
	Timestamp     string            `json:"timestamp"`
	Metadata      map[string]string `json:"metadata"`
}

func (s *service) registerCustomer(t testing.TB, email string) commandResult {
	t.Helper()
	var res commandResult
	s.do(t, "POST", "/v1/customers", map[string]any{
		"email": email, "first_name": "John", "last_name": "Doe", "phone": "+15550123",
	}, http.StatusCreated).json(t, &res)
	return res
}

func (s *service) createOrder(t testing.TB, customer uuid.UUID, items ...itemBody) commandResult {
	t.Helper()
	if len(items) == 0 {
		items = []itemBody{{uuid.NewString(), 2}, {uuid.NewString(), 1}}
	}
	var res commandResult
	s.do(t, "POST", "/v1/orders", map[string]any{"customer_id": customer, "items": items}, http.StatusCreated).json(t, &res)
	return res
}

func (s *service) order(t testing.TB, id uuid.UUID, minVersion int64) orderBody {
	t.Helper()
	path := "/v1/orders/" + id.String()
	if minVersion > 0 {
		path += fmt.Sprintf("?min_version=%d", minVersion)
	}
	var o orderBody
	s.do(t, "GET", path, nil, http.StatusOK).json(t, &o)
	return o
}

func (s *service) events(t testing.TB, kind string, id uuid.UUID) []envelope {
	t.Helper()
	var body struct{ Events []envelope }
	s.do(t, "GET", fmt.Sprintf("/v1/%s/%s/events", kind, id), nil, http.StatusOK).json(t, &body)
	return body.Events
}

// storedEvents counts the rows of the event log, read from the SQLite file
// by a connection of its own.
func storedEvents(t testing.TB, s *service) int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+s.eventsDB()+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestLifecycle drives the README walkthrough: the seed's whole order
// lifecycle, a refused transition, and the history.
func TestLifecycle(t *testing.T) {
	s := start(t, "", nil)
	corr := uuid.NewString()
	cust := s.registerCustomer(t, "john.doe@example.com")
	if cust.Version != 1 {
		t.Fatalf("new customer at version %d, want 1", cust.Version)
	}

	var created commandResult
	r := s.do(t, "POST", "/v1/orders", map[string]any{"customer_id": cust.ID,
		"items": []itemBody{{uuid.NewString(), 2}, {uuid.NewString(), 1}}}, http.StatusCreated, "X-Correlation-ID", corr)
	r.json(t, &created)
	if got := r.Header.Get("Location"); got != "/v1/orders/"+created.ID.String() {
		t.Errorf("Location %q", got)
	}
	if got := r.Header.Get("X-Correlation-ID"); got != corr {
		t.Errorf("X-Correlation-ID %q, want the one sent, %q", got, corr)
	}
	if r.Header.Get("ETag") != `"1"` {
		t.Errorf("ETag %q, want \"1\"", r.Header.Get("ETag"))
	}
	id := created.ID
	newItems := []itemBody{{uuid.NewString(), 5}}
	steps := []struct {
		method, path string
		body         any
		status       string
	}{
		{"PUT", "/items", map[string]any{"items": newItems}, "created"},
		{"POST", "/confirm", nil, "confirmed"},
		{"POST", "/ship", map[string]any{"tracking_number": "TRACK-123-XYZ", "carrier": "DHL Express"}, "shipped"},
		{"POST", "/deliver", map[string]any{"signature": "John Doe"}, "delivered"},
	}
	for i, st := range steps {
		var res commandResult
		s.do(t, st.method, "/v1/orders/"+id.String()+st.path, st.body, http.StatusOK, "X-Correlation-ID", corr).json(t, &res)
		if want := int64(i + 2); res.Version != want {
			t.Fatalf("%s: version %d, want %d", st.path, res.Version, want)
		}
		o := s.order(t, id, res.Version)
		if o.Status != st.status || o.Version != res.Version {
			t.Fatalf("%s: read model says %s v%d, want %s v%d", st.path, o.Status, o.Version, st.status, res.Version)
		}
	}

	p := s.do(t, "POST", "/v1/orders/"+id.String()+"/cancel", map[string]any{"reason": "too late"}, http.StatusConflict).problem(t)
	if p.Code != "invalid_transition" || p.Status != 409 || p.Type != "urn:orderd:problem:invalid_transition" {
		t.Errorf("cancel after delivery: %+v", p)
	}

	o := s.order(t, id, 5)
	if o.CustomerID != cust.ID || *o.TrackingNumber != "TRACK-123-XYZ" || *o.Carrier != "DHL Express" || o.CancelledReason != nil {
		t.Errorf("final order %+v", o)
	}
	if len(o.Items) != 1 || o.Items[0] != newItems[0] {
		t.Errorf("items %+v, want %+v", o.Items, newItems)
	}

	evs := s.events(t, "orders", id)
	wantTypes := []string{"OrderCreated", "OrderItemsUpdated", "OrderConfirmed", "OrderShipped", "OrderDelivered"}
	if len(evs) != len(wantTypes) {
		t.Fatalf("%d events, want %d", len(evs), len(wantTypes))
	}
	causes := map[uuid.UUID]bool{}
	for i, e := range evs {
		if e.EventType != wantTypes[i] || e.Sequence != int64(i+1) || e.AggregateID != id || e.AggregateType != "Order" {
			t.Errorf("event %d: %s seq %d of %s %s", i, e.EventType, e.Sequence, e.AggregateType, e.AggregateID)
		}
		if e.CorrelationID.String() != corr {
			t.Errorf("event %d: correlation id %s, want %s", i, e.CorrelationID, corr)
		}
		if e.EventID.Version() != 7 || e.CausationID.Version() != 7 || causes[e.CausationID] {
			t.Errorf("event %d: event id %s, causation id %s: want UUIDv7s, one command per event", i, e.EventID, e.CausationID)
		}
		causes[e.CausationID] = true
	}
	if evs[0].EventVersion != 2 || evs[0].Data["created_at"] == nil {
		t.Errorf("OrderCreated is v%d %v, want the current schema v2 with created_at", evs[0].EventVersion, evs[0].Data)
	}
	if evs[3].Data["tracking_number"] != "TRACK-123-XYZ" || evs[4].Data["signature"] != "John Doe" {
		t.Errorf("event data %v / %v", evs[3].Data, evs[4].Data)
	}

	var list struct {
		CustomerID uuid.UUID `json:"customer_id"`
		Orders     []struct {
			ID      uuid.UUID
			Status  string
			Version int64
		}
		NextAfter *uuid.UUID `json:"next_after"`
	}
	s.do(t, "GET", "/v1/customers/"+cust.ID.String()+"/orders", nil, http.StatusOK).json(t, &list)
	if len(list.Orders) != 1 || list.Orders[0].ID != id || list.Orders[0].Status != "delivered" || list.NextAfter != nil {
		t.Errorf("customer orders %+v", list)
	}
}

// TestRacingConfirms: of 32 concurrent confirms of one order exactly one
// wins, and exactly one OrderConfirmed is stored.
func TestRacingConfirms(t *testing.T) {
	s := start(t, "", nil)
	cust := s.registerCustomer(t, "race@example.com")
	o := s.createOrder(t, cust.ID)

	var wg sync.WaitGroup
	statuses := make([]int, 32)
	codes := make([]string, 32)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := s.call(t, "POST", "/v1/orders/"+o.ID.String()+"/confirm", nil, nil, true)
			statuses[i] = r.Status
			if r.Status != http.StatusOK {
				codes[i] = r.problem(t).Code
			}
		}()
	}
	wg.Wait()
	ok := 0
	for i, st := range statuses {
		switch {
		case st == http.StatusOK:
			ok++
		case st == http.StatusConflict && codes[i] == "order_already_confirmed":
		default:
			t.Errorf("confirm %d: %d %s", i, st, codes[i])
		}
	}
	if ok != 1 {
		t.Errorf("%d confirms succeeded, want exactly 1", ok)
	}
	confirmed := 0
	for _, e := range s.events(t, "orders", o.ID) {
		if e.EventType == "OrderConfirmed" {
			confirmed++
		}
	}
	if confirmed != 1 {
		t.Errorf("%d OrderConfirmed events stored, want 1", confirmed)
	}
}

// TestRacingItemUpdates: 32 concurrent item updates without If-Match all
// succeed, each at its own version, with no gap.
func TestRacingItemUpdates(t *testing.T) {
	s := start(t, "", nil)
	cust := s.registerCustomer(t, "items@example.com")
	o := s.createOrder(t, cust.ID)

	var wg sync.WaitGroup
	versions := make([]int64, 32)
	for i := range versions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var res commandResult
			s.do(t, "PUT", "/v1/orders/"+o.ID.String()+"/items",
				map[string]any{"items": []itemBody{{uuid.NewString(), i + 1}}}, http.StatusOK).json(t, &res)
			versions[i] = res.Version
		}()
	}
	wg.Wait()
	sort.Slice(versions, func(i, j int) bool { return versions[i] < versions[j] })
	for i, v := range versions {
		if v != int64(i+2) {
			t.Fatalf("versions %v, want 2..33 each once", versions)
		}
	}
	evs := s.events(t, "orders", o.ID)
	if len(evs) != 33 {
		t.Fatalf("%d events stored, want 33", len(evs))
	}
	if got := s.order(t, o.ID, 33); got.Version != 33 {
		t.Errorf("read model at v%d, want 33", got.Version)
	}
}

// TestIfMatch: a command with a stale If-Match is refused with 412 and
// stores nothing; with the current version it goes through.
func TestIfMatch(t *testing.T) {
	s := start(t, "", nil)
	cust := s.registerCustomer(t, "ifmatch@example.com")
	o := s.createOrder(t, cust.ID)
	path := "/v1/orders/" + o.ID.String() + "/items"
	body := map[string]any{"items": []itemBody{{uuid.NewString(), 3}}}

	s.do(t, "PUT", path, body, http.StatusOK, "If-Match", `"1"`)
	before := storedEvents(t, s)
	p := s.do(t, "PUT", path, body, http.StatusPreconditionFailed, "If-Match", `"1"`).problem(t)
	if p.Code != "version_mismatch" {
		t.Errorf("stale If-Match: code %q", p.Code)
	}
	if got := storedEvents(t, s); got != before {
		t.Errorf("a refused command stored %d events", got-before)
	}
	r := s.do(t, "POST", "/v1/orders/"+o.ID.String()+"/confirm", nil, http.StatusOK, "If-Match", `"2"`)
	if r.Header.Get("ETag") != `"3"` {
		t.Errorf("ETag %q after confirm, want \"3\"", r.Header.Get("ETag"))
	}
}
