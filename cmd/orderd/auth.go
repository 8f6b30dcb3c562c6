package main

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/oidc"
)

// Discovery of the OIDC issuer at start: the first attempt may take this
// long before orderd listens anyway; failed attempts are retried in the
// background from this delay on, doubling up to a minute.
const (
	discoveryWait  = 5 * time.Second
	discoveryRetry = 2 * time.Second
)

// newTokens returns the verifier of the API's bearer tokens, or nil when no
// issuer is configured: then the API is open, and orderd says so. An
// issuer that does not answer does not stop orderd: it starts, answers
// 503 auth_unavailable on the API (and is unready) until discovery
// succeeds, rather than crash-looping through an identity provider's
// outage with the relay and the projector stopped too.
func newTokens(ctx context.Context, cfg config, log *zap.Logger) (*oidc.Verifier, error) {
	if cfg.oidcIssuer == "" {
		log.Warn("no OIDC issuer configured (-oidc-issuer, ORDERD_OIDC_ISSUER): the API is open to every client")
		return nil, nil
	}
	v, err := oidc.New(oidc.Config{Issuer: cfg.oidcIssuer, Audience: cfg.oidcAudience}, log.Named("oidc"))
	if err != nil {
		return nil, err
	}
	v.Start(ctx, discoveryWait, discoveryRetry)
	return v, nil
}
