package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/api/apitest"
	"github.com/orderd/orderd/internal/oidc/oidctest"
)

// TestOIDCKeycloak: orderd against a real OpenID provider (Keycloak, from
// scripts/keycloak.sh), with tokens its clients get by client_credentials:
// each route family asks for its scope, a token without it is 403
// insufficient_scope, none or a foreign one 401, the admin routes take the
// admin scope or the static admin token, and a key rotation at the provider
// reaches orderd without a restart.
func TestOIDCKeycloak(t *testing.T) {
	kc := oidctest.RealProvider(t)
	s := start(t, "", map[string]string{
		"ORDERD_OIDC_ISSUER": kc.Issuer, "ORDERD_OIDC_AUDIENCE": oidctest.Audience, "ORDERD_ADMIN_TOKEN": "break-glass",
	})
	writer, reader := kc.Token(t, oidctest.Writer), kc.Token(t, oidctest.Reader)
	bearer := func(tok string) string { return "Bearer " + tok }

	var ready struct {
		Auth       string
		Components map[string]struct{ Status, Detail string }
	}
	s.do(t, "GET", "/readyz", nil, http.StatusOK).json(t, &ready)
	if ready.Auth != "oidc" || ready.Components["auth"].Status != "up" || !strings.Contains(ready.Components["auth"].Detail, kc.Issuer) {
		t.Fatalf("/readyz: auth %q, component %+v", ready.Auth, ready.Components["auth"])
	}

	// orders:write and customers:write create.
	var cust, order commandResult
	s.do(t, "POST", "/v1/customers", map[string]any{"email": "kc@example.com", "first_name": "K", "last_name": "C"},
		http.StatusCreated, "Authorization", bearer(writer)).json(t, &cust)
	items := []itemBody{{uuid.NewString(), 1}}
	s.do(t, "POST", "/v1/orders", map[string]any{"customer_id": cust.ID, "items": items},
		http.StatusCreated, "Authorization", bearer(writer)).json(t, &order)

	// orders:read only: reads, and a command is 403 with the challenge.
	s.do(t, "GET", "/v1/orders/"+order.ID.String()+"?min_version=1", nil, http.StatusOK, "Authorization", bearer(reader))
	r := s.do(t, "POST", "/v1/orders", map[string]any{"customer_id": cust.ID, "items": items},
		http.StatusForbidden, "Authorization", bearer(reader))
	if p := r.problem(t); p.Code != "insufficient_scope" {
		t.Errorf("orders:read only: code %q", p.Code)
	}
	if got, want := r.Header.Get("WWW-Authenticate"), `Bearer realm="orderd", error="insufficient_scope", scope="orders:write"`; got != want {
		t.Errorf("WWW-Authenticate %q, want %q", got, want)
	}

	// No token: 401 with a challenge that names the scope.
	r = s.call(t, "POST", "/v1/orders", map[string]any{"customer_id": cust.ID, "items": items}, nil, false)
	if r.Status != http.StatusUnauthorized || r.problem(t).Code != "unauthorized" ||
		r.Header.Get("WWW-Authenticate") != `Bearer realm="orderd", scope="orders:write"` {
		t.Errorf("no token: %d %s, WWW-Authenticate %q", r.Status, r.Body, r.Header.Get("WWW-Authenticate"))
	}
	// A token of the same issuer for another audience: 401 invalid_token.
	r = s.do(t, "GET", "/v1/orders/"+order.ID.String(), nil, http.StatusUnauthorized, "Authorization", bearer(kc.Token(t, oidctest.Stranger)))
	if r.problem(t).Code != "invalid_token" || !strings.Contains(r.Header.Get("WWW-Authenticate"), `error="invalid_token", error_description="`) {
		t.Errorf("another audience: %s, WWW-Authenticate %q", r.Body, r.Header.Get("WWW-Authenticate"))
	}
	// Health and the contract stay open.
	s.do(t, "GET", "/healthz", nil, http.StatusOK)

	// The admin routes: the admin scope, or the static admin token.
	s.do(t, "GET", "/v1/admin/rebuilds/latest", nil, http.StatusForbidden, "Authorization", bearer(writer))
	for _, tok := range []string{kc.Token(t, oidctest.Admin), "break-glass"} {
		if r := s.call(t, "GET", "/v1/admin/rebuilds/latest", nil, map[string]string{"Authorization": bearer(tok)}, true); r.Status == 401 || r.Status == 403 {
			t.Errorf("admin route with %.12s...: %d %s", tok, r.Status, r.Body)
		}
	}

	// A key rotation at the provider: new tokens name a key orderd has not
	// seen; it fetches the key set again and takes them.
	before := oidctest.KeyID(t, writer)
	unused := kc.Token(t, oidctest.Reader) // of the old key, not verified (nor cached) before the rotation
	kc.RotateKeys(t)
	var rotated string
	waitUntil(t, "tokens of the new key", func() bool {
		rotated = kc.Token(t, oidctest.Writer)
		return oidctest.KeyID(t, rotated) != before
	})
	s.do(t, "POST", "/v1/orders", map[string]any{"customer_id": cust.ID, "items": items},
		http.StatusCreated, "Authorization", bearer(rotated))
	// The older key is still published (Keycloak keeps it until it is
	// removed): its tokens, checked for the first time, still pass.
	s.do(t, "GET", "/v1/orders/"+order.ID.String(), nil, http.StatusOK, "Authorization", bearer(unused))
}

// TestOIDCIssuerDownAtStart: an issuer that does not answer does not stop
// orderd: it starts, is unready with the reason, answers 503
// auth_unavailable on the API (health stays open), and works as soon as
// the issuer answers, without a restart.
func TestOIDCIssuerDownAtStart(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: waits for discovery retries")
	}
	is := oidctest.NewIssuer(t)
	is.SetDown(true)
	s := start(t, "", map[string]string{"ORDERD_OIDC_ISSUER": is.URL, "ORDERD_OIDC_AUDIENCE": "orderd"})
	tok := is.Token(t, oidctest.Claims{Subject: "svc", Audience: []string{"orderd"}, Scope: "orders:read", Expiry: time.Now().Add(time.Hour)})

	var ready struct {
		Status, Auth string
		Components   map[string]struct{ Status, Detail string }
	}
	s.do(t, "GET", "/readyz", nil, http.StatusServiceUnavailable).json(t, &ready)
	if ready.Auth != "oidc" || ready.Components["auth"].Status != "down" || !strings.Contains(ready.Components["auth"].Detail, "discovery") {
		t.Fatalf("/readyz with the issuer down: %+v", ready)
	}
	id := uuid.NewString()
	r := s.do(t, "GET", "/v1/orders/"+id, nil, http.StatusServiceUnavailable, "Authorization", "Bearer "+tok)
	if r.problem(t).Code != "auth_unavailable" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("API with the issuer down: %s (Retry-After %q)", r.Body, r.Header.Get("Retry-After"))
	}
	s.do(t, "GET", "/healthz", nil, http.StatusOK)

	is.SetDown(false)
	waitUntil(t, "discovery retried", func() bool {
		return s.call(t, "GET", "/readyz", nil, nil, true).Status == http.StatusOK
	})
	s.do(t, "GET", "/v1/orders/"+id, nil, http.StatusNotFound, "Authorization", "Bearer "+tok)
}

// TestOpenWithoutIssuer: with no issuer the API is open, and /readyz and
// a warning at start say so.
func TestOpenWithoutIssuer(t *testing.T) {
	lines, addr := startLogged(t, nil)
	warned := false
	for _, l := range lines {
		warned = warned || l["level"] == "warn" && strings.Contains(fmt.Sprint(l["msg"]), "the API is open to every client")
	}
	if !warned {
		t.Errorf("no warning at start that the API is open: %v", lines)
	}
	s := &service{t: t, base: "http://" + addr.String(), http: &http.Client{Timeout: 10 * time.Second}}
	s.router = apitest.Contract(t, s.base)
	var ready struct {
		Auth       string
		Components map[string]struct{ Status string }
	}
	s.do(t, "GET", "/readyz", nil, http.StatusOK).json(t, &ready)
	if ready.Auth != "open" || ready.Components["auth"].Status != "off" {
		t.Errorf("/readyz: %+v", ready)
	}
	s.do(t, "GET", "/v1/orders/"+uuid.NewString(), nil, http.StatusNotFound)
}
