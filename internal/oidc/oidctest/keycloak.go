package oidctest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A Client of the realm of scripts/keycloak/realm.json: a service that
// gets tokens with client_credentials.
type Client struct{ ID, Secret string }

// The clients of the test realm, by the scopes their tokens grant.
var (
	// Writer: orders:read orders:write customers:read customers:write.
	Writer = Client{"orderd-writer", "writer-secret"}
	// Reader: orders:read customers:read.
	Reader = Client{"orderd-reader", "reader-secret"}
	// Admin: admin and every other scope.
	Admin = Client{"orderd-admin", "admin-secret"}
	// Stranger: orders scopes, but tokens for another audience.
	Stranger = Client{"other-service", "other-secret"}
)

// Audience is the audience of the test realm's tokens (but Stranger's).
const Audience = "orderd"

// DefaultPort is scripts/keycloak.sh's HTTP port when OIDC_PORT is unset.
const DefaultPort = "8180"

// Keycloak is the realm that scripts/keycloak.sh serves.
type Keycloak struct {
	Issuer string // http://127.0.0.1:PORT/realms/orderd
	base   string // http://127.0.0.1:PORT
	realm  string
	http   *http.Client
}

// RealProvider returns the test realm of scripts/keycloak.sh once its
// discovery document answers: ORDERD_TEST_OIDC_ISSUER names the issuer,
// else it is realm orderd on 127.0.0.1:OIDC_PORT (default DefaultPort).
// Without an answer it skips the test, or fails it when CI=true; under go
// test -short it skips without looking.
func RealProvider(t testing.TB) *Keycloak {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: needs the OpenID provider of scripts/keycloak.sh")
	}
	issuer := os.Getenv("ORDERD_TEST_OIDC_ISSUER")
	if issuer == "" {
		port := os.Getenv("OIDC_PORT")
		if port == "" {
			port = DefaultPort
		}
		issuer = "http://127.0.0.1:" + port + "/realms/orderd"
	}
	base, realm, ok := strings.Cut(issuer, "/realms/")
	if !ok {
		t.Fatalf("ORDERD_TEST_OIDC_ISSUER=%s is not a Keycloak realm's issuer (.../realms/NAME)", issuer)
	}
	kc := &Keycloak{Issuer: issuer, base: base, realm: realm, http: &http.Client{Timeout: 10 * time.Second}}
	resp, err := kc.http.Get(issuer + "/.well-known/openid-configuration")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("discovery answered %s", resp.Status)
		}
	}
	if err != nil {
		msg := fmt.Sprintf("OpenID provider at %s does not answer (%v); start it with scripts/keycloak.sh start, or set OIDC_PORT or ORDERD_TEST_OIDC_ISSUER", issuer, err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return kc
}

// Token returns a fresh access token of c (client_credentials).
func (kc *Keycloak) Token(t testing.TB, c Client) string {
	t.Helper()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	kc.post(t, kc.Issuer+"/protocol/openid-connect/token", "", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {c.ID}, "client_secret": {c.Secret},
	}, &tok)
	if tok.AccessToken == "" {
		t.Fatalf("no access token for %s", c.ID)
	}
	return tok.AccessToken
}

// RotateKeys makes the realm sign with a new RSA key: a key provider of a
// higher priority than any before, through Keycloak's admin API (the
// master realm's user admin, password OIDC_ADMIN_PASSWORD, default
// "admin"). The older keys stay published, as in a real rotation; tokens
// issued from now on name the new key's id.
func (kc *Keycloak) RotateKeys(t testing.TB) {
	t.Helper()
	pw := os.Getenv("OIDC_ADMIN_PASSWORD")
	if pw == "" {
		pw = "admin"
	}
	var admin struct {
		AccessToken string `json:"access_token"`
	}
	kc.post(t, kc.base+"/realms/master/protocol/openid-connect/token", "", url.Values{
		"grant_type": {"password"}, "client_id": {"admin-cli"}, "username": {"admin"}, "password": {pw},
	}, &admin)
	var realm struct{ ID string }
	kc.call(t, "GET", kc.base+"/admin/realms/"+kc.realm, admin.AccessToken, nil, &realm)
	priority := strconv.FormatInt(time.Now().Unix()%1_000_000_000, 10) // above the realm's first keys (100), and rising
	kc.call(t, "POST", kc.base+"/admin/realms/"+kc.realm+"/components", admin.AccessToken, map[string]any{
		"name": "rotated-" + priority, "providerId": "rsa-generated", "providerType": "org.keycloak.keys.KeyProvider",
		"parentId": realm.ID,
		"config": map[string][]string{"priority": {priority}, "keySize": {"2048"}, "active": {"true"},
			"enabled": {"true"}, "algorithm": {"RS256"}},
	}, nil)
}

// KeyID returns the kid of a token's header.
func KeyID(t testing.TB, token string) string {
	t.Helper()
	h, _, _ := strings.Cut(token, ".")
	b, err := base64.RawURLEncoding.DecodeString(h)
	var header struct{ Kid string }
	if err == nil {
		err = json.Unmarshal(b, &header)
	}
	if err != nil {
		t.Fatalf("token header: %v", err)
	}
	return header.Kid
}

func (kc *Keycloak) post(t testing.TB, u, bearer string, form url.Values, out any) {
	t.Helper()
	kc.do(t, "POST", u, bearer, "application/x-www-form-urlencoded", strings.NewReader(form.Encode()), out)
}

func (kc *Keycloak) call(t testing.TB, method, u, bearer string, in, out any) {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	kc.do(t, method, u, bearer, "application/json", body, out)
}

func (kc *Keycloak) do(t testing.TB, method, u, bearer, contentType string, body io.Reader, out any) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := kc.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %s %s", method, u, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, u, err, b)
		}
	}
}
