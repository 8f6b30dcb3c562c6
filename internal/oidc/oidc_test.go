package oidc_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/oidc"
	"github.com/orderd/orderd/internal/oidc/oidctest"
)

const audience = "orderd"

// newVerifier returns a verifier of is's tokens that discovered is, on
// clock now.
func newVerifier(t *testing.T, is *oidctest.Issuer, now func() time.Time) *oidc.Verifier {
	t.Helper()
	v, err := oidc.New(oidc.Config{Issuer: is.URL, Audience: audience, Now: now}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Discover(context.Background()); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerify(t *testing.T) {
	is := oidctest.NewIssuer(t)
	now := time.Now()
	v := newVerifier(t, is, func() time.Time { return now })
	good := oidctest.Claims{Subject: "svc-1", Audience: []string{"other", audience}, Scope: "orders:read orders:write", Expiry: now.Add(time.Minute)}
	with := func(change func(*oidctest.Claims)) oidctest.Claims {
		c := good
		change(&c)
		return c
	}

	tests := []struct {
		name  string
		token string
		want  string // a part of the error; "" for a token that passes
	}{
		{"valid", is.Token(t, good), ""},
		{"expired within the leeway", is.Token(t, with(func(c *oidctest.Claims) { c.Expiry = now.Add(-oidc.DefaultLeeway + time.Second) })), ""},
		{"expired beyond the leeway", is.Token(t, with(func(c *oidctest.Claims) { c.Expiry = now.Add(-oidc.DefaultLeeway - time.Second) })), "expired"},
		{"wrong audience", is.Token(t, with(func(c *oidctest.Claims) { c.Audience = []string{"billing"} })), "audience"},
		{"bad signature", is.ForgedToken(t, good), "signature"},
		{"HS256", is.HMACToken(t, good, []byte("orderd-shared-secret-0123456789ab")), "malformed"},
		{"alg none", is.UnsignedToken(t, good), "malformed"},
		{"not a JWT", "abc.def", "malformed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := v.Verify(context.Background(), tc.token)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if tok.Subject != "svc-1" || !tok.HasScope("orders:write") || !tok.HasScope("orders:read") || tok.HasScope("admin") {
					t.Fatalf("token = %+v", tok)
				}
				return
			}
			if !errors.Is(err, oidc.ErrInvalidToken) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalidToken about %q", err, tc.want)
			}
		})
	}
}

func TestVerifyAnotherIssuer(t *testing.T) {
	is, other := oidctest.NewIssuer(t), oidctest.NewIssuer(t)
	v := newVerifier(t, is, time.Now)
	_, err := v.Verify(context.Background(), other.Token(t, oidctest.Claims{Subject: "x", Audience: []string{audience}, Expiry: time.Now().Add(time.Minute)}))
	if !errors.Is(err, oidc.ErrInvalidToken) {
		t.Fatalf("a token of another issuer: err = %v", err)
	}
}

// A rotation at the provider: a token signed with a key id the verifier has
// not seen fetches the key set again, once, and passes; with the old key
// retired, its tokens are refused after that fetch, once the ones verified
// before have left the cache (30 s).
func TestVerifyKeyRotation(t *testing.T) {
	is := oidctest.NewIssuer(t)
	now := time.Now()
	v := newVerifier(t, is, func() time.Time { return now })
	c := oidctest.Claims{Subject: "svc", Audience: []string{audience}, Expiry: now.Add(time.Hour)}
	old := is.Token(t, c)
	if _, err := v.Verify(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), is.Token(t, c)); err != nil {
		t.Fatal(err)
	}
	if n := is.KeyFetches(); n != 1 {
		t.Fatalf("key set fetched %d times for two tokens of one key, want 1", n)
	}
	is.Rotate(t, true)
	if _, err := v.Verify(context.Background(), is.Token(t, c)); err != nil {
		t.Fatalf("a token of the new key: %v", err)
	}
	if n := is.KeyFetches(); n != 2 {
		t.Fatalf("key set fetched %d times, want 2 (once more for the unknown key id)", n)
	}
	if _, err := v.Verify(context.Background(), old); err != nil {
		t.Fatalf("a token of the retired key, verified 0 s ago: %v (want it still cached)", err)
	}
	// go-oidc hands the fetched keys to the waiting check a moment before
	// it stores them for the next: until then a token of the retired key
	// not seen before (a subject of its own) may still pass; wait for that
	// moment to end.
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; ; i++ {
		fresh := c
		fresh.Subject = fmt.Sprintf("svc-%d", i)
		_, err := v.Verify(context.Background(), is.TokenOfKey(t, 0, fresh))
		if errors.Is(err, oidc.ErrInvalidToken) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a new token of the retired key: err = %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	now = now.Add(31 * time.Second)
	if _, err := v.Verify(context.Background(), old); !errors.Is(err, oidc.ErrInvalidToken) {
		t.Fatalf("a token of the retired key, verified 31 s ago: err = %v", err)
	}
}

// A token verified before is taken from the cache, but never past its
// expiry and the leeway.
func TestVerifyCacheKeepsExpiry(t *testing.T) {
	is := oidctest.NewIssuer(t)
	now := time.Now()
	v := newVerifier(t, is, func() time.Time { return now })
	tok := is.Token(t, oidctest.Claims{Subject: "svc", Audience: []string{audience}, Expiry: now.Add(5 * time.Second)})
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	now = now.Add(5*time.Second + oidc.DefaultLeeway - time.Second)
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("within the leeway: %v", err)
	}
	now = now.Add(2 * time.Second)
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, oidc.ErrInvalidToken) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("past the leeway, cached 25 s before: err = %v", err)
	}
}

// Until discovery succeeds Verify says the provider is unavailable; Start
// keeps trying in the background and the verifier works once it answers.
func TestStartRetriesDiscovery(t *testing.T) {
	is := oidctest.NewIssuer(t)
	is.SetDown(true)
	v, err := oidc.New(oidc.Config{Issuer: is.URL, Audience: audience}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v.Start(ctx, time.Second, 20*time.Millisecond)
	tok := is.Token(t, oidctest.Claims{Subject: "svc", Audience: []string{audience}, Expiry: time.Now().Add(time.Minute)})
	if _, err := v.Verify(ctx, tok); !errors.Is(err, oidc.ErrUnavailable) {
		t.Fatalf("before discovery: err = %v, want ErrUnavailable", err)
	}
	if v.Ready() == nil {
		t.Fatal("Ready before discovery")
	}
	is.SetDown(false)
	deadline := time.Now().Add(5 * time.Second)
	for v.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("discovery not retried: %v", v.Ready())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("after discovery: %v", err)
	}
}

func TestNewNeedsAudience(t *testing.T) {
	if _, err := oidc.New(oidc.Config{Issuer: "http://127.0.0.1:1/realms/x"}, zap.NewNop()); err == nil {
		t.Fatal("an issuer without an audience was accepted")
	}
}

// BenchmarkVerify is the cost of one token check on its own, with the key
// set fetched: "first", a token not seen before (an RS256 signature of
// 2048 bits, and the claims); "again", the same token again (the cache).
func BenchmarkVerify(b *testing.B) {
	is := oidctest.NewIssuer(b)
	v, err := oidc.New(oidc.Config{Issuer: is.URL, Audience: audience}, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	if err := v.Discover(context.Background()); err != nil {
		b.Fatal(err)
	}
	claims := oidctest.Claims{Subject: "svc", Audience: []string{audience}, Scope: "orders:write", Expiry: time.Now().Add(time.Hour)}
	b.Run("first", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			claims.Subject = fmt.Sprintf("svc-%d", i) // a token of its own
			tok := is.Token(b, claims)
			b.StartTimer()
			if _, err := v.Verify(context.Background(), tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("again", func(b *testing.B) {
		tok := is.Token(b, claims)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(context.Background(), tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}
