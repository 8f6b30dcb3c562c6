package main

import (
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

const conformanceToken = "conformance-admin-token"

// TestConformanceHead: every GET route answers HEAD with GET's status and
// headers and no body.
func TestConformanceHead(t *testing.T) {
	s := start(t, "", map[string]string{"ORDERD_ADMIN_TOKEN": conformanceToken})
	c := s.registerCustomer(t, "head@example.com")
	o := s.createOrder(t, c.ID)
	s.order(t, o.ID, 1)
	bearer := "Bearer " + conformanceToken
	for _, path := range []string{
		"/healthz", "/readyz", "/openapi.yaml", "/metrics",
		"/v1/customers/" + c.ID.String(), "/v1/customers/" + c.ID.String() + "/orders?limit=1",
		"/v1/customers/" + c.ID.String() + "/events",
		"/v1/orders/" + o.ID.String(), "/v1/orders/" + o.ID.String() + "?min_version=1",
		"/v1/orders/" + o.ID.String() + "/events",
		"/v1/orders/" + uuid.NewString(), // a 404 too
		"/v1/admin/dlq", "/v1/admin/dlq/42",
	} {
		t.Run(path, func(t *testing.T) {
			get := s.call(t, "GET", path, nil, map[string]string{"Authorization": bearer}, true)
			head := s.call(t, "HEAD", path, nil, map[string]string{"Authorization": bearer}, true)
			if head.Status != get.Status || len(head.Body) != 0 {
				t.Fatalf("HEAD: %d with %d bytes of body, GET: %d", head.Status, len(head.Body), get.Status)
			}
			for _, h := range []string{"Content-Type", "ETag"} {
				if head.Header.Get(h) != get.Header.Get(h) {
					t.Errorf("%s: HEAD %q, GET %q", h, head.Header.Get(h), get.Header.Get(h))
				}
			}
		})
	}
}

// TestConformanceAllow: OPTIONS answers 204 with Allow on every route, and
// a method a route does not take answers 405 with the same Allow.
func TestConformanceAllow(t *testing.T) {
	s := start(t, "", map[string]string{"ORDERD_ADMIN_TOKEN": conformanceToken})
	id := uuid.NewString()
	routes := []struct{ path, allow, refused string }{
		{"/healthz", "GET, HEAD, OPTIONS", "POST"},
		{"/readyz", "GET, HEAD, OPTIONS", "DELETE"},
		{"/openapi.yaml", "GET, HEAD, OPTIONS", "PUT"},
		{"/asyncapi.yaml", "GET, HEAD, OPTIONS", "POST"},
		{"/metrics", "GET, HEAD, OPTIONS", "POST"},
		{"/v1/customers", "POST, OPTIONS", "GET"},
		{"/v1/customers/" + id, "GET, HEAD, OPTIONS", "DELETE"},
		{"/v1/customers/" + id + "/email", "POST, OPTIONS", "GET"},
		{"/v1/customers/" + id + "/phone", "POST, OPTIONS", "PUT"},
		{"/v1/customers/" + id + "/orders", "GET, HEAD, OPTIONS", "POST"},
		{"/v1/customers/" + id + "/events", "GET, HEAD, OPTIONS", "POST"},
		{"/v1/orders", "POST, OPTIONS", "HEAD"},
		{"/v1/orders/" + id, "GET, HEAD, OPTIONS", "DELETE"},
		{"/v1/orders/" + id + "/items", "PUT, OPTIONS", "POST"},
		{"/v1/orders/" + id + "/confirm", "POST, OPTIONS", "GET"},
		{"/v1/orders/" + id + "/ship", "POST, OPTIONS", "PATCH"},
		{"/v1/orders/" + id + "/deliver", "POST, OPTIONS", "GET"},
		{"/v1/orders/" + id + "/cancel", "POST, OPTIONS", "DELETE"},
		{"/v1/orders/" + id + "/events", "GET, HEAD, OPTIONS", "PUT"},
		{"/v1/admin/dlq", "GET, HEAD, OPTIONS", "POST"},
		{"/v1/admin/dlq/42", "GET, HEAD, DELETE, OPTIONS", "PUT"},
		{"/v1/admin/dlq/42/replay", "POST, OPTIONS", "GET"},
	}
	auth := map[string]string{"Authorization": "Bearer " + conformanceToken}
	for _, r := range routes {
		t.Run(r.path, func(t *testing.T) {
			opt := s.call(t, "OPTIONS", r.path, nil, auth, false) // the intro documents OPTIONS for every route
			if opt.Status != http.StatusNoContent || opt.Header.Get("Allow") != r.allow || len(opt.Body) != 0 {
				t.Errorf("OPTIONS: %d, Allow %q, want 204 with %q", opt.Status, opt.Header.Get("Allow"), r.allow)
			}
			refused := s.call(t, r.refused, r.path, nil, auth, false)
			if refused.Status != http.StatusMethodNotAllowed || refused.Header.Get("Allow") != r.allow {
				t.Fatalf("%s: %d, Allow %q, want 405 with %q", r.refused, refused.Status, refused.Header.Get("Allow"), r.allow)
			}
			if r.refused != "HEAD" {
				if p := refused.problem(t); p.Code != "method_not_allowed" {
					t.Errorf("405 problem %+v", p)
				}
			}
		})
	}
	if r := s.call(t, "OPTIONS", "/v1/widgets", nil, nil, false); r.Status != http.StatusNotFound {
		t.Errorf("OPTIONS of no route: %d, want 404", r.Status)
	}
	if r := s.call(t, "OPTIONS", "/v1/admin/dlq", nil, nil, false); r.Status != http.StatusUnauthorized {
		t.Errorf("OPTIONS of an admin route without the token: %d, want 401", r.Status)
	}
}

// TestConformanceDLQUnknown: an unknown dead letter is 404 for every admin
// route, also when the relay is off and a known one could not be released.
func TestConformanceDLQUnknown(t *testing.T) {
	s := start(t, "", map[string]string{"ORDERD_ADMIN_TOKEN": conformanceToken}) // no brokers: the relay is off
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/admin/dlq/999"}, {"POST", "/v1/admin/dlq/999/replay"}, {"DELETE", "/v1/admin/dlq/999"},
	} {
		r := s.do(t, c.method, c.path, nil, http.StatusNotFound, "Authorization", "Bearer "+conformanceToken)
		if p := r.problem(t); p.Code != "dead_letter_not_found" {
			t.Errorf("%s %s: %+v", c.method, c.path, p)
		}
	}
}

// TestConformanceMinVersion: a read-your-writes read that waiting cannot
// satisfy is answered at once: 404 for an unknown id (or an id of the
// other type), 409 version_not_reached above the stored version.
func TestConformanceMinVersion(t *testing.T) {
	s := start(t, "", map[string]string{"ORDERD_READ_WAIT": "5s"})
	c := s.registerCustomer(t, "minversion@example.com")
	o := s.createOrder(t, c.ID)
	for _, q := range []struct {
		path   string
		status int
		code   string
	}{
		{"/v1/orders/" + uuid.NewString() + "?min_version=1", 404, "order_not_found"},
		{"/v1/customers/" + uuid.NewString() + "?min_version=3", 404, "customer_not_found"},
		{"/v1/orders/" + c.ID.String() + "?min_version=1", 404, "order_not_found"},
		{"/v1/orders/" + o.ID.String() + "?min_version=2", 409, "version_not_reached"},
		{"/v1/customers/" + c.ID.String() + "?min_version=9223372036854775807", 409, "version_not_reached"},
	} {
		began := time.Now()
		r := s.do(t, "GET", q.path, nil, q.status)
		if p := r.problem(t); p.Code != q.code {
			t.Errorf("GET %s: %+v, want %s", q.path, p, q.code)
		}
		if took := time.Since(began); took > time.Second {
			t.Errorf("GET %s took %s: it waited", q.path, took)
		}
	}
	// A version that is stored is served (or waited for).
	s.do(t, "POST", "/v1/orders/"+o.ID.String()+"/confirm", nil, http.StatusOK)
	if got := s.order(t, o.ID, 2); got.Version != 2 {
		t.Errorf("order at min_version 2: version %d", got.Version)
	}
}

// TestConformanceHelp: -help, -h and help exit 0 and list the subcommands;
// each subcommand has its own -help; an unknown flag still fails.
func TestConformanceHelp(t *testing.T) {
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"-help"}, {"-h"}, {"help"}, {"migrate", "-help"}, {"healthcheck", "-h"}, {"dlq", "-help"}, {"rebuild", "-help"}, {"bench", "-help"}} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Errorf("orderd %s: %v\n%s", strings.Join(args, " "), err, out)
			continue
		}
		want := []string{"migrate", "healthcheck", "dlq", "-http-addr"}
		switch args[0] {
		case "dlq":
			want = []string{"list", "replay", "discard", "-token"}
		case "healthcheck":
			want = []string{"usage: orderd healthcheck", "/healthz", "-http-addr"}
		case "rebuild":
			want = []string{"usage: orderd rebuild", "follow", "cancel", "-token"}
		case "bench":
			want = []string{"usage: orderd bench", "-mix", "-rate"}
		}
		// A client's -help has its own flags only, none of the server's.
		if c := args[0]; (c == "dlq" || c == "healthcheck" || c == "rebuild" || c == "bench") && strings.Contains(string(out), "-data-dir") {
			t.Errorf("orderd %s lists the server's flags:\n%s", strings.Join(args, " "), out)
		}
		for _, w := range want {
			if !strings.Contains(string(out), w) {
				t.Errorf("orderd %s does not mention %s:\n%s", strings.Join(args, " "), w, out)
			}
		}
	}
	if err := exec.Command(bin, "-no-such-flag").Run(); err == nil {
		t.Error("orderd -no-such-flag exited 0")
	}
	// A client's mistyped flag: the error and a one-line hint, exit 1.
	out, err := exec.Command(bin, "dlq", "list", "-no-such-flag").CombinedOutput()
	if want := "orderd dlq: flag provided but not defined: -no-such-flag\nrun 'orderd dlq -help' for usage\n"; err == nil || string(out) != want {
		t.Errorf("orderd dlq list -no-such-flag: %v, printed %q, want %q", err, out, want)
	}
}
