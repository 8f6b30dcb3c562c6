// Package oidc checks the bearer tokens of orderd's API: JWT access tokens
// of an OpenID Connect provider, verified with the keys its discovery
// document names (github.com/coreos/go-oidc underneath).
//
// What a token must be to pass: signed with one of Algorithms by a key of
// the issuer's JWKS (an unknown key id fetches the key set again, which is
// how a rotation at the provider reaches orderd without a restart), issued
// by Config.Issuer, for Config.Audience, and not expired by more than
// Config.Leeway. Its `sub` and space-separated `scope` claims come back as a
// Token.
//
// Discovery happens in the background: until the provider has answered
// once, Verify returns ErrUnavailable, so that an identity provider that is
// down when orderd starts costs 503s (and an unready /readyz), not a
// crash loop.
package oidc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
)

// The errors of Verify.
var (
	// ErrInvalidToken is a token that is not acceptable: malformed, signed
	// with an algorithm or key the issuer does not vouch for, expired,
	// issued by another issuer or for another audience.
	ErrInvalidToken = errors.New("invalid token")
	// ErrUnavailable is returned while the provider's discovery document
	// has not been read yet: no token can be checked.
	ErrUnavailable = errors.New("identity provider unavailable")
)

// Algorithms are the signature algorithms a token may use: the asymmetric
// ones of RFC 7518 (and EdDSA). A fixed list, not a setting: HS256 would
// need a secret shared with the provider, and "none" is never acceptable;
// whatever the provider's discovery document advertises besides these is
// refused.
var Algorithms = []string{
	gooidc.RS256, gooidc.RS384, gooidc.RS512,
	gooidc.PS256, gooidc.PS384, gooidc.PS512,
	gooidc.ES256, gooidc.ES384, gooidc.ES512,
	gooidc.EdDSA,
}

// DefaultLeeway is how long after its expiry a token is still accepted:
// room for clocks that disagree by a little, not a way to extend tokens.
const DefaultLeeway = 30 * time.Second

// Config says which tokens to accept.
type Config struct {
	Issuer   string // the provider's issuer URL, exactly as its tokens' iss
	Audience string // a value the tokens' aud must contain
	// Leeway is how long after exp a token still passes; 0: DefaultLeeway,
	// negative: none.
	Leeway time.Duration
	// Client fetches the discovery document and the keys; nil: a client
	// with a 10 s timeout.
	Client *http.Client
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// Token is what orderd uses of a verified token.
type Token struct {
	Subject  string   // sub
	Scopes   []string // the scope claim, split at spaces
	ClientID string   // azp, the client the token was issued to, when present
	Expiry   time.Time
}

// HasScope reports whether the token was granted scope.
func (t Token) HasScope(scope string) bool {
	for _, s := range t.Scopes {
		if s == scope {
			return true
		}
	}
	return false
}

// Verifier checks tokens against one issuer. Its zero value is not usable:
// see New.
type Verifier struct {
	cfg Config
	log *zap.Logger

	mu       sync.RWMutex
	verifier *gooidc.IDTokenVerifier // nil until discovery succeeded
	lastErr  error                   // of the last discovery attempt

	cache tokenCache // tokens verified lately; see cache.go
}

// New returns a verifier of cfg's tokens. It does not reach the provider:
// Start does.
func New(cfg Config, log *zap.Logger) (*Verifier, error) {
	if cfg.Issuer == "" || cfg.Audience == "" {
		return nil, errors.New("oidc: an issuer and an audience are both needed")
	}
	switch {
	case cfg.Leeway == 0:
		cfg.Leeway = DefaultLeeway
	case cfg.Leeway < 0:
		cfg.Leeway = 0
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Verifier{cfg: cfg, log: log, lastErr: errors.New("discovery not attempted yet")}, nil
}

// Issuer returns the issuer the verifier trusts.
func (v *Verifier) Issuer() string { return v.cfg.Issuer }

// Discover reads the provider's discovery document once. On success the
// verifier starts checking tokens; the key set is fetched on the first
// token and again whenever a token names a key id it does not hold.
func (v *Verifier) Discover(ctx context.Context) error {
	// The key set keeps this context for its fetches: not ctx, which may
	// be a start-up deadline.
	keysCtx := gooidc.ClientContext(context.Background(), v.cfg.Client)
	p, err := gooidc.NewProvider(gooidc.ClientContext(ctx, v.cfg.Client), v.cfg.Issuer)
	if err != nil {
		err = fmt.Errorf("oidc: discovery of %s: %w", v.cfg.Issuer, err)
		v.mu.Lock()
		v.lastErr = err
		v.mu.Unlock()
		return err
	}
	leeway, now := v.cfg.Leeway, v.cfg.Now
	verifier := p.VerifierContext(keysCtx, &gooidc.Config{
		ClientID:             v.cfg.Audience,
		SupportedSigningAlgs: Algorithms,
		// go-oidc refuses a token whose exp is before Now: a clock set
		// back by the leeway accepts one that expired within it.
		Now: func() time.Time { return now().Add(-leeway) },
	})
	v.mu.Lock()
	v.verifier, v.lastErr = verifier, nil
	v.mu.Unlock()
	return nil
}

// Start tries discovery once, for up to wait, and when that fails keeps
// trying in the background (every retry, doubling to a minute) until it
// succeeds or ctx ends. It logs each failure as a warning.
func (v *Verifier) Start(ctx context.Context, wait, retry time.Duration) {
	first, cancel := context.WithTimeout(ctx, wait)
	err := v.Discover(first)
	cancel()
	if err == nil {
		v.log.Info("oidc issuer discovered", zap.String("issuer", v.cfg.Issuer), zap.String("audience", v.cfg.Audience))
		return
	}
	v.log.Warn("oidc discovery failed: the API answers 503 auth_unavailable until it succeeds", zap.Error(err))
	go func() {
		delay := retry
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			if err := v.Discover(ctx); err != nil {
				v.log.Warn("oidc discovery failed again", zap.Error(err), zap.Duration("retry_in", delay))
				delay = min(2*delay, time.Minute)
				continue
			}
			v.log.Info("oidc issuer discovered", zap.String("issuer", v.cfg.Issuer), zap.String("audience", v.cfg.Audience))
			return
		}
	}()
}

// Ready returns nil once discovery succeeded, else the last failure.
func (v *Verifier) Ready() error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.lastErr
}

// Verify checks raw, a compact JWT, and returns its subject and scopes. It
// returns an error wrapping ErrInvalidToken for a token that does not pass
// (its text says why, in words fit for a client) and ErrUnavailable
// before discovery.
func (v *Verifier) Verify(ctx context.Context, raw string) (Token, error) {
	v.mu.RLock()
	verifier, lastErr := v.verifier, v.lastErr
	v.mu.RUnlock()
	if verifier == nil {
		return Token{}, fmt.Errorf("%w: %w", ErrUnavailable, lastErr)
	}
	now := v.cfg.Now()
	if tok, ok := v.cache.get(raw, now); ok {
		return tok, nil
	}
	idt, err := verifier.Verify(ctx, raw)
	if err != nil {
		return Token{}, fmt.Errorf("%w: %s", ErrInvalidToken, reason(err))
	}
	var claims struct {
		Scope string `json:"scope"`
		AZP   string `json:"azp"`
	}
	if err := idt.Claims(&claims); err != nil {
		return Token{}, fmt.Errorf("%w: its claims are not a JSON object: %v", ErrInvalidToken, err)
	}
	tok := Token{Subject: idt.Subject, Scopes: strings.Fields(claims.Scope), ClientID: claims.AZP, Expiry: idt.Expiry}
	until := now.Add(cacheFor)
	if end := tok.Expiry.Add(v.cfg.Leeway); end.Before(until) {
		until = end
	}
	v.cache.put(raw, tok, until, now)
	return tok, nil
}

// reason says why go-oidc refused a token, without its "oidc: " prefix.
func reason(err error) string {
	var expired *gooidc.TokenExpiredError
	if errors.As(err, &expired) {
		return "the token expired at " + expired.Expiry.UTC().Format(time.RFC3339)
	}
	return strings.TrimPrefix(err.Error(), "oidc: ")
}
