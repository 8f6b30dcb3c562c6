package api

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/orderd/orderd"
	"github.com/orderd/orderd/internal/oidc"
	"github.com/orderd/orderd/internal/oidc/oidctest"
)

// authFixture is the token check in front of a handler that answers 200
// with the request's Subject, on a real verifier of an in-process issuer.
type authFixture struct {
	is  *oidctest.Issuer
	url string
	now time.Time
}

func newAuthFixture(t *testing.T, discovered bool) *authFixture {
	t.Helper()
	f := &authFixture{is: oidctest.NewIssuer(t), now: time.Now()}
	v, err := oidc.New(oidc.Config{Issuer: f.is.URL, Audience: "orderd"}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if discovered {
		if err := v.Discover(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	s := New(nil, nil, nil, nil, orderd.OpenAPI, zap.NewNop()).WithAdmin(nil, adminToken).WithTokens(v)
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "subject="+Subject(r.Context()))
	})
	srv := httptest.NewServer(s.correlate(s.authenticate(next)))
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

// token signs claims for audience orderd, valid for a minute, with scopes.
func (f *authFixture) token(t *testing.T, scopes ...string) string {
	return f.is.Token(t, oidctest.Claims{Subject: "svc-" + strings.Join(scopes, "+"), Audience: []string{"orderd"},
		Scope: oidctest.Scopes(scopes...), Expiry: f.now.Add(time.Minute)})
}

type authAnswer struct {
	status    int
	challenge string
	body      string
	problem   problemJSON
	header    http.Header
}

func (f *authFixture) send(t *testing.T, method, path, token string) authAnswer {
	t.Helper()
	req, err := http.NewRequest(method, f.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case strings.HasPrefix(token, "Basic "):
		req.Header.Set("Authorization", token)
	case token != "":
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := authAnswer{status: resp.StatusCode, challenge: resp.Header.Get("WWW-Authenticate"), body: string(b), header: resp.Header}
	if resp.Header.Get("Content-Type") == "application/problem+json" {
		if err := json.Unmarshal(b, &a.problem); err != nil {
			t.Fatalf("problem %s: %v", b, err)
		}
	}
	return a
}

func TestAuthScopes(t *testing.T) {
	f := newAuthFixture(t, true)
	writer, reader := f.token(t, ScopeOrdersWrite, ScopeOrdersRead), f.token(t, ScopeOrdersRead)
	admin, customers := f.token(t, ScopeAdmin), f.token(t, ScopeCustomersRead, ScopeCustomersWrite)
	both := f.token(t, ScopeOrdersRead, ScopeCustomersRead)

	tests := []struct {
		name, method, path, token string
		status                    int
		code, challenge           string // the problem's code and the WWW-Authenticate header
	}{
		{"open route, no token", "GET", "/healthz", "", 200, "", ""},
		{"console, no token", "GET", "/console/app.js", "", 200, "", ""},
		{"create, no token", "POST", "/v1/orders", "", 401, "unauthorized", `Bearer realm="orderd", scope="orders:write"`},
		{"create, not a bearer token", "POST", "/v1/orders", "Basic b3JkZXJkOnB3", 401, "unauthorized", `Bearer realm="orderd", scope="orders:write"`},
		{"create, orders:write", "POST", "/v1/orders", writer, 200, "", ""},
		{"create, orders:read only", "POST", "/v1/orders/", reader, 403, "insufficient_scope", `Bearer realm="orderd", error="insufficient_scope", scope="orders:write"`},
		{"read, orders:read", "GET", "/v1/orders/0195a000-0000-7000-8000-00000000000a", reader, 200, "", ""},
		{"history, orders:read", "HEAD", "/v1/orders/0195a000-0000-7000-8000-00000000000a/events", reader, 200, "", ""},
		{"items, orders:read only", "PUT", "/v1/orders/x/items", reader, 403, "insufficient_scope", `Bearer realm="orderd", error="insufficient_scope", scope="orders:write"`},
		{"customer, orders scopes", "GET", "/v1/customers/x", writer, 403, "insufficient_scope", `Bearer realm="orderd", error="insufficient_scope", scope="customers:read"`},
		{"customer, customers:read", "GET", "/v1/customers/x", customers, 200, "", ""},
		{"register, customers:write", "POST", "/v1/customers", customers, 200, "", ""},
		{"a customer's orders, orders:read", "GET", "/v1/customers/x/orders", reader, 200, "", ""},
		{"a customer's orders, customers:read", "GET", "/v1/customers/x/orders", customers, 403, "insufficient_scope", `Bearer realm="orderd", error="insufficient_scope", scope="orders:read"`},
		{"stream, orders:read only", "GET", "/v1/events/stream", reader, 403, "insufficient_scope", `Bearer realm="orderd", error="insufficient_scope", scope="orders:read customers:read"`},
		{"stream, both read scopes", "GET", "/v1/events/stream", both, 200, "", ""},
		{"admin, admin scope", "GET", "/v1/admin/dlq", admin, 200, "", ""},
		{"admin, orders scopes", "GET", "/v1/admin/dlq", writer, 403, "insufficient_scope", `Bearer realm="orderd", error="insufficient_scope", scope="admin"`},
		{"admin, the static admin token", "POST", "/v1/admin/dlq/1/replay", adminToken, 200, "", ""},
		{"orders, the static admin token", "GET", "/v1/orders/x", adminToken, 401, "invalid_token", ""},
		{"admin scope is not orders:read", "GET", "/v1/orders/x", admin, 403, "insufficient_scope", `Bearer realm="orderd", error="insufficient_scope", scope="orders:read"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := f.send(t, tc.method, tc.path, tc.token)
			if a.status != tc.status || a.problem.Code != tc.code {
				t.Fatalf("%d %s, want %d %q", a.status, a.body, tc.status, tc.code)
			}
			if tc.challenge != "" && a.challenge != tc.challenge {
				t.Errorf("WWW-Authenticate %q, want %q", a.challenge, tc.challenge)
			}
			if tc.status == 200 && tc.method != "HEAD" && strings.HasPrefix(tc.path, "/v1/") && tc.token != adminToken {
				if want := "subject=svc-"; !strings.HasPrefix(a.body, want) {
					t.Errorf("body %q: Subject not the token's sub", a.body)
				}
			}
		})
	}
}

// Tokens that do not pass are 401 invalid_token with an
// error_description that says why, fit for the header.
func TestAuthInvalidTokens(t *testing.T) {
	f := newAuthFixture(t, true)
	good := oidctest.Claims{Subject: "svc", Audience: []string{"orderd"}, Scope: ScopeOrdersWrite, Expiry: f.now.Add(time.Minute)}
	expired := good
	expired.Expiry = f.now.Add(-oidc.DefaultLeeway - 5*time.Second)
	recent := good
	recent.Expiry = f.now.Add(-oidc.DefaultLeeway + 10*time.Second)
	foreign := good
	foreign.Audience = []string{"billing"}

	tests := []struct {
		name, token, why string // why: a part of error_description
	}{
		{"bad signature", f.is.ForgedToken(t, good), "signature"},
		{"wrong audience", f.is.Token(t, foreign), "audience"},
		{"expired beyond the leeway", f.is.Token(t, expired), "expired"},
		{"HS256", f.is.HMACToken(t, good, []byte("a-secret-that-the-verifier-never-has")), "malformed"},
		{"alg none", f.is.UnsignedToken(t, good), "malformed"},
		{"garbage", "not-a-jwt", "malformed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := f.send(t, "POST", "/v1/orders", tc.token)
			prefix := `Bearer realm="orderd", error="invalid_token", error_description="`
			if a.status != 401 || a.problem.Code != "invalid_token" || a.problem.Type != "urn:orderd:problem:invalid_token" {
				t.Fatalf("%d %s, want 401 invalid_token", a.status, a.body)
			}
			desc, ok := strings.CutPrefix(a.challenge, prefix)
			if !ok || !strings.HasSuffix(desc, `"`) || !strings.Contains(desc, tc.why) || strings.ContainsAny(strings.TrimSuffix(desc, `"`), "\"\\") {
				t.Errorf("WWW-Authenticate %q, want %s...%s...\"", a.challenge, prefix, tc.why)
			}
		})
	}
	if a := f.send(t, "POST", "/v1/orders", f.is.Token(t, recent)); a.status != 200 {
		t.Errorf("a token expired within the leeway: %d %s", a.status, a.body)
	}
}

// A key rotation at the provider: the first token of the new key is
// accepted (the key set is fetched again for its unknown key id).
func TestAuthKeyRotation(t *testing.T) {
	f := newAuthFixture(t, true)
	if a := f.send(t, "GET", "/v1/orders/x", f.token(t, ScopeOrdersRead)); a.status != 200 {
		t.Fatalf("before the rotation: %d %s", a.status, a.body)
	}
	f.is.Rotate(t, true)
	if a := f.send(t, "GET", "/v1/orders/x", f.token(t, ScopeOrdersRead)); a.status != 200 {
		t.Fatalf("a token of the new key: %d %s", a.status, a.body)
	}
	if n := f.is.KeyFetches(); n != 2 {
		t.Errorf("key set fetched %d times, want 2", n)
	}
}

// Before the issuer was discovered nothing can be checked: 503
// auth_unavailable with Retry-After, not 401; open routes stay open.
func TestAuthBeforeDiscovery(t *testing.T) {
	f := newAuthFixture(t, false)
	a := f.send(t, "POST", "/v1/orders", f.token(t, ScopeOrdersWrite))
	if a.status != 503 || a.problem.Code != "auth_unavailable" || a.header.Get("Retry-After") == "" {
		t.Fatalf("%d %s (Retry-After %q), want 503 auth_unavailable", a.status, a.body, a.header.Get("Retry-After"))
	}
	if a := f.send(t, "GET", "/healthz", ""); a.status != 200 {
		t.Errorf("/healthz: %d", a.status)
	}
}

func TestHeaderText(t *testing.T) {
	if got := headerText("a \"b\" \\c\n\x01é" + strings.Repeat("x", 300)); strings.ContainsAny(got, "\"\\\n\x01") || len(got) != 200 || !strings.HasPrefix(got, "a 'b' 'c") {
		t.Errorf("headerText = %q", got)
	}
}
