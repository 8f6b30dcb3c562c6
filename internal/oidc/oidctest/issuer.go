// Package oidctest gives tests identity providers: Issuer, an in-process
// one whose keys and tokens a test controls (bad signatures, foreign
// algorithms, rotations), and RealProvider, the Keycloak realm that
// scripts/keycloak.sh runs.
package oidctest

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Issuer is an OpenID provider in the test's process: a discovery document
// and a key set over HTTP on loopback, and a signer of tokens.
type Issuer struct {
	URL string // the issuer, as tokens name it

	srv      *httptest.Server
	mu       sync.Mutex
	keys     []*rsa.PrivateKey // published; the last one signs
	kids     []string
	all      []*rsa.PrivateKey // every key ever made, retired ones too
	allKids  []string
	fetches  atomic.Int64 // key set fetches
	unserved atomic.Bool  // answer 503 to everything
}

// NewIssuer starts an issuer with one RSA key. It stops when the test
// ends.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	is := &Issuer{}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		if is.unserved.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                is.URL,
			"jwks_uri":                              is.URL + "/keys",
			"token_endpoint":                        is.URL + "/token",
			"authorization_endpoint":                is.URL + "/auth",
			"id_token_signing_alg_values_supported": []string{"RS256", "HS256", "none"},
		})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) {
		is.fetches.Add(1)
		is.mu.Lock()
		set := jose.JSONWebKeySet{}
		for i, k := range is.keys {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.PublicKey, KeyID: is.kids[i], Algorithm: "RS256", Use: "sig"})
		}
		is.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	})
	is.srv = httptest.NewServer(mux)
	t.Cleanup(is.srv.Close)
	is.URL = is.srv.URL
	is.Rotate(t, false)
	return is
}

// Rotate adds a new signing key; with retire, the older keys leave the key
// set. It returns the new key's id.
func (is *Issuer) Rotate(t testing.TB, retire bool) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	kid := fmt.Sprintf("key-%d", len(is.kids)+1)
	if retire {
		is.keys, is.kids = nil, nil
	}
	is.keys, is.kids = append(is.keys, k), append(is.kids, kid)
	is.all, is.allKids = append(is.all, k), append(is.allKids, kid)
	return kid
}

// KeyFetches counts the key set's fetches so far.
func (is *Issuer) KeyFetches() int64 { return is.fetches.Load() }

// SetDown makes the issuer answer 503 to discovery (down) or serve again.
func (is *Issuer) SetDown(down bool) { is.unserved.Store(down) }

// Claims are a token's claims; Token fills in iss, and iat from exp.
type Claims struct {
	Subject  string
	Audience []string
	Scope    string // space-separated
	Expiry   time.Time
}

func (is *Issuer) payload(c Claims) map[string]any {
	return map[string]any{
		"iss": is.URL, "sub": c.Subject, "aud": c.Audience, "scope": c.Scope,
		"exp": c.Expiry.Unix(), "iat": c.Expiry.Add(-5 * time.Minute).Unix(), "azp": "test-client",
	}
}

// Token is c signed RS256 with the issuer's current key.
func (is *Issuer) Token(t testing.TB, c Claims) string {
	t.Helper()
	is.mu.Lock()
	k, kid := is.keys[len(is.keys)-1], is.kids[len(is.kids)-1]
	is.mu.Unlock()
	return Sign(t, jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: k, KeyID: kid}}, is.payload(c))
}

// TokenOfKey is c signed RS256 with the i-th key the issuer ever made
// (0: the first), retired or not.
func (is *Issuer) TokenOfKey(t testing.TB, i int, c Claims) string {
	t.Helper()
	is.mu.Lock()
	k, kid := is.all[i], is.allKids[i]
	is.mu.Unlock()
	return Sign(t, jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: k, KeyID: kid}}, is.payload(c))
}

// ForgedToken is c signed RS256 under the current key's id, with a key
// that is not the issuer's.
func (is *Issuer) ForgedToken(t testing.TB, c Claims) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	is.mu.Lock()
	kid := is.kids[len(is.kids)-1]
	is.mu.Unlock()
	return Sign(t, jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: k, KeyID: kid}}, is.payload(c))
}

// HMACToken is c signed HS256 with secret (a key the verifier might be
// tricked into using: for example the RSA public key's bytes).
func (is *Issuer) HMACToken(t testing.TB, c Claims, secret []byte) string {
	t.Helper()
	return Sign(t, jose.SigningKey{Algorithm: jose.HS256, Key: secret}, is.payload(c))
}

// UnsignedToken is c with alg "none" and an empty signature.
func (is *Issuer) UnsignedToken(t testing.TB, c Claims) string {
	t.Helper()
	p, err := json.Marshal(is.payload(c))
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc(p) + "."
}

// Sign returns payload as a compact JWS signed with key.
func Sign(t testing.TB, key jose.SigningKey, payload map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(key, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(p)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Scopes joins scopes as a scope claim.
func Scopes(scopes ...string) string { return strings.Join(scopes, " ") }
