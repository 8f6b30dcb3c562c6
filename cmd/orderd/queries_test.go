package main

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/orderd/orderd"
	"github.com/orderd/orderd/internal/cli"
)

// TestCustomer: registration, changes, the customer view with
// read-your-writes, and its paged order list.
func TestCustomer(t *testing.T) {
	s := start(t, "", nil)
	c := s.registerCustomer(t, "ada@example.com")
	var res commandResult
	s.do(t, "POST", "/v1/customers/"+c.ID.String()+"/email", map[string]any{"email": "ada@EXAMPLE.org"}, http.StatusOK).json(t, &res)
	s.do(t, "POST", "/v1/customers/"+c.ID.String()+"/phone", map[string]any{"phone": "+442071838750"}, http.StatusOK,
		"If-Match", `"2"`).json(t, &res)
	if res.Version != 3 {
		t.Fatalf("version %d after two changes, want 3", res.Version)
	}
	var got struct {
		ID                         uuid.UUID
		Email, FirstName, LastName string
		Phone                      *string
		Version                    int64
	}
	r := s.do(t, "GET", "/v1/customers/"+c.ID.String()+"?min_version=3", nil, http.StatusOK)
	r.json(t, &got)
	if got.Email != "ada@example.org" || got.Phone == nil || *got.Phone != "+442071838750" || got.Version != 3 || r.Header.Get("ETag") != `"3"` {
		t.Fatalf("customer %+v (ETag %s)", got, r.Header.Get("ETag"))
	}

	var ids []uuid.UUID
	for range 5 {
		ids = append(ids, s.createOrder(t, c.ID).ID)
	}
	// Wait until the last order is projected, then page through by two.
	s.order(t, ids[4], 1)
	var seen []uuid.UUID
	after := ""
	for page := 0; ; page++ {
		var list struct {
			Orders    []struct{ ID uuid.UUID }
			NextAfter *uuid.UUID `json:"next_after"`
		}
		s.do(t, "GET", "/v1/customers/"+c.ID.String()+"/orders?limit=2"+after, nil, http.StatusOK).json(t, &list)
		for _, o := range list.Orders {
			seen = append(seen, o.ID)
		}
		if list.NextAfter == nil {
			break
		}
		if page > 5 {
			t.Fatal("paging does not end")
		}
		after = "&after=" + list.NextAfter.String()
	}
	if len(seen) != 5 {
		t.Fatalf("paged through %d orders, want 5: %v", len(seen), seen)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i].String() <= seen[i-1].String() {
			t.Fatalf("pages not in id order: %v", seen)
		}
	}
}

// TestProjectionBehind: a read that asks for a version the store does not
// hold, or for an aggregate it does not know, is answered at once (409
// version_not_reached, 404), not after a wait; the 503 of a projection that
// is truly behind is tested in internal/api (TestReadYourWrites).
func TestProjectionBehind(t *testing.T) {
	s := start(t, "", map[string]string{"ORDERD_READ_WAIT": "200ms"})
	c := s.registerCustomer(t, "behind@example.com")
	o := s.createOrder(t, c.ID)
	// A version the store does not hold yet, or an aggregate it does not
	// know, is answered at once: waiting could not help.
	r := s.do(t, "GET", "/v1/orders/"+o.ID.String()+"?min_version=2", nil, http.StatusConflict)
	if p := r.problem(t); p.Code != "version_not_reached" {
		t.Fatalf("problem %+v", p)
	}
	s.do(t, "GET", "/v1/customers/"+uuid.NewString()+"?min_version=1", nil, http.StatusNotFound)
	s.do(t, "GET", "/v1/customers/"+uuid.NewString(), nil, http.StatusNotFound)
}

// TestOperations: health, readiness with its components, the served
// contract, and correlation ids.
func TestOperations(t *testing.T) {
	s := start(t, "", nil)
	s.do(t, "GET", "/healthz", nil, http.StatusOK)

	c := s.registerCustomer(t, "ops@example.com")
	o := s.createOrder(t, c.ID)
	s.order(t, o.ID, 1)
	var ready struct {
		Status     string
		Components map[string]struct {
			Status string
			Lag    *int64
			Epoch  int64
		}
	}
	// The read model shows version 1 once the projector applied it; its
	// progress is saved just after, so the lag reaches 0 a moment later.
	waitUntil(t, "the projector's lag in /readyz is 0", func() bool {
		s.do(t, "GET", "/readyz", nil, http.StatusOK).json(t, &ready)
		lag := ready.Components["projector"].Lag
		return lag != nil && *lag == 0
	})
	p := ready.Components["projector"]
	if ready.Status != "ready" || ready.Components["store"].Status != "up" || p.Status != "up" {
		t.Fatalf("readyz %+v", ready)
	}
	if p.Epoch != 1 { // the first take of the projector's lease
		t.Errorf("the projector's epoch in /readyz = %d, want 1", p.Epoch)
	}

	s.do(t, "GET", "/metrics", nil, http.StatusOK) // as the contract says
	m := s.metrics(t)
	for _, series := range []string{
		`orderd_commands_total{command="CreateOrder",status="201"}`,
		`orderd_commands_total{command="RegisterCustomer",status="201"}`,
		`orderd_command_duration_seconds_count{command="CreateOrder"}`,
		`orderd_events_appended_total{aggregate_type="Order"}`,
	} {
		if m[series] != 1 {
			t.Errorf("%s = %v, want 1", series, m[series])
		}
	}
	if v := m[`orderd_worker_epoch{worker="projector"}`]; v != 1 {
		t.Errorf("orderd_worker_epoch of the projector = %v, want 1", v)
	}
	if m[`orderd_worker_up{worker="projector"}`] != 1 || m[`orderd_worker_active{worker="projector"}`] != 1 {
		t.Errorf("the projector's worker series: up %v, active %v; want 1 and 1",
			m[`orderd_worker_up{worker="projector"}`], m[`orderd_worker_active{worker="projector"}`])
	}
	if v, ok := m[`orderd_feed_lag_events{consumer="projector"}`]; !ok || v != 0 {
		t.Errorf("projector lag %v (present %v), want 0", v, ok)
	}
	if ready.Components["relay"].Status != "off" {
		t.Errorf("relay without brokers: %+v", ready.Components["relay"])
	}

	r := s.do(t, "GET", "/openapi.yaml", nil, http.StatusOK)
	if !bytes.Equal(r.Body, orderd.OpenAPI) || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/yaml") {
		t.Fatalf("/openapi.yaml is not the contract (%s)", r.Header.Get("Content-Type"))
	}

	// A correlation id given as a 32-digit trace id comes back canonical and
	// lands in the event; without one the server makes a UUIDv7.
	trace := strings.ReplaceAll(uuid.NewString(), "-", "")
	r = s.do(t, "POST", "/v1/orders/"+o.ID.String()+"/confirm", nil, http.StatusOK, "X-Correlation-ID", trace)
	want := uuid.MustParse(trace).String()
	if got := r.Header.Get("X-Correlation-ID"); got != want {
		t.Fatalf("X-Correlation-ID %q, want %q", got, want)
	}
	evs := s.events(t, "orders", o.ID)
	if evs[1].CorrelationID.String() != want {
		t.Fatalf("event correlation id %s, want %s", evs[1].CorrelationID, want)
	}
	if id := uuid.MustParse(s.do(t, "GET", "/healthz", nil, http.StatusOK).Header.Get("X-Correlation-ID")); id.Version() != 7 {
		t.Fatalf("generated correlation id %s is not a UUIDv7", id)
	}
}

// TestHealthcheck: `orderd healthcheck`, the container's HEALTHCHECK,
// passes against a running orderd and fails where none listens.
func TestHealthcheck(t *testing.T) {
	s := start(t, "", nil)
	addr := strings.TrimPrefix(s.base, "http://")
	env := func(k string) string { return map[string]string{"ORDERD_HTTP_ADDR": addr}[k] }
	if err := cli.Healthcheck(t.Context(), nil, env, io.Discard); err != nil {
		t.Fatalf("healthcheck of a running orderd: %v", err)
	}
	if err := cli.Healthcheck(t.Context(), []string{"-http-addr", "127.0.0.1:1"}, env, io.Discard); err == nil {
		t.Fatal("healthcheck passed with nothing listening")
	}
}
