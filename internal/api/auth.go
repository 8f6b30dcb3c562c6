package api

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/oidc"
)

// The scopes of the API: a token's scope claim grants them, and each route
// family asks for one (see requiredScopes).
const (
	ScopeOrdersRead     = "orders:read"
	ScopeOrdersWrite    = "orders:write"
	ScopeCustomersRead  = "customers:read"
	ScopeCustomersWrite = "customers:write"
	ScopeAdmin          = "admin"
)

// realm names orderd in its WWW-Authenticate challenges.
const realm = "orderd"

// TokenVerifier checks a bearer token (*oidc.Verifier). Verify returns an
// error wrapping oidc.ErrInvalidToken for a token that does not pass, and
// oidc.ErrUnavailable while no token can be checked.
type TokenVerifier interface {
	Verify(ctx context.Context, raw string) (oidc.Token, error)
}

// subjectKey is the context key of Subject.
type subjectKey struct{}

// errInsufficientScope is a valid token without the scope its route asks for.
var errInsufficientScope = errors.New("insufficient scope")

// WithTokens makes every API route ask for a bearer token that v accepts,
// with the scopes of the route's family; health, readiness, metrics, the
// contracts and the console stay open. The admin token of WithAdmin, when
// set, is still taken on /v1/admin (and only there). Call it before
// Handler; without it the API is open.
func (s *Server) WithTokens(v TokenVerifier) *Server {
	s.tokens = v
	return s
}

// AuthMode is "oidc" when the API asks for tokens, "open" when it does not
// (as /readyz reports it).
func (s *Server) AuthMode() string {
	if s.tokens == nil {
		return "open"
	}
	return "oidc"
}

// requiredScopes are the scopes a request needs, all of them, by route
// family, or none for a route that is open. The family is the path's
// prefix, so that a method no route of the family takes (a 405), or an id
// no route matches (a 404), is answered only to a client allowed there.
// Reads are GET, HEAD and OPTIONS.
//
//   - /v1/orders: orders:read, orders:write. History (/events) and time
//     travel (?as_of, ?as_of_version) are reads of the order.
//   - /v1/customers: customers:read, customers:write; but the orders of a
//     customer (/v1/customers/{id}/orders) are orders:read.
//   - /v1/events/stream: orders:read and customers:read, as it carries the
//     events of both (a customer's email and phone among them).
//   - /v1/admin: admin; so is the erasure of a customer
//     (/v1/customers/{id}/erasure).
//   - /v1/keys: keys:read, or admin (see grants).
func requiredScopes(r *http.Request) []string {
	read := r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions
	pick := func(readScope, writeScope string) []string {
		if read {
			return []string{readScope}
		}
		return []string{writeScope}
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) < 2 || parts[0] != "v1" {
		return nil
	}
	switch parts[1] {
	case "admin":
		return []string{ScopeAdmin}
	case "orders":
		return pick(ScopeOrdersRead, ScopeOrdersWrite)
	case "customers":
		if len(parts) == 4 && parts[3] == "erasure" {
			return []string{ScopeAdmin}
		}
		if len(parts) == 4 && parts[3] == "orders" {
			return pick(ScopeOrdersRead, ScopeOrdersWrite)
		}
		return pick(ScopeCustomersRead, ScopeCustomersWrite)
	case "events":
		return []string{ScopeOrdersRead, ScopeCustomersRead}
	case "keys":
		return []string{ScopeKeysRead}
	}
	return nil
}

// authenticate admits a request to a route that needs a scope when it bears
// a token that s.tokens accepts and that grants the scope, and puts the
// token's subject in the context (Subject). It answers 401 (no token, or
// one that does not pass) and 403 (a token without the scope) with the
// WWW-Authenticate challenge of RFC 6750 §3, and 503 while the identity
// provider has not been discovered.
func (s *Server) authenticate(next http.Handler) http.Handler {
	var admin *[sha256.Size]byte
	if s.adminToken != "" {
		sum := sha256.Sum256([]byte(s.adminToken))
		admin = &sum
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scopes := requiredScopes(r)
		if len(scopes) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		scope := strings.Join(scopes, " ") // as RFC 6750's scope attribute lists them
		scheme, raw, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		raw = strings.TrimSpace(raw)
		if !strings.EqualFold(scheme, "Bearer") || raw == "" {
			// RFC 6750 §3.1: a request with no credentials gets no error code.
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q, scope=%q`, realm, scope))
			writeError(w, r, &aggregate.Error{Kind: errUnauthorized, Code: "unauthorized",
				Detail: fmt.Sprintf("this route needs an Authorization: Bearer <token> header, with a token of scope %s", scope)})
			return
		}
		if (scope == ScopeAdmin || scope == ScopeKeysRead) && admin != nil && tokenMatches(raw, *admin) {
			next.ServeHTTP(w, r) // the static admin token: no subject
			return
		}
		tok, err := s.tokens.Verify(r.Context(), raw)
		switch {
		case errors.Is(err, oidc.ErrInvalidToken):
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q, error="invalid_token", error_description="%s"`, realm, headerText(err.Error())))
			writeError(w, r, err)
			return
		case err != nil:
			writeError(w, r, err)
			return
		case !hasAll(tok, scopes) && !(scope == ScopeKeysRead && hasAll(tok, []string{ScopeAdmin})):
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q, error="insufficient_scope", scope=%q`, realm, scope))
			writeError(w, r, &aggregate.Error{Kind: errInsufficientScope, Code: "insufficient_scope",
				Detail: fmt.Sprintf("%s %s needs scope %s, which the token does not grant", r.Method, requestPath(r), scope)})
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), subjectKey{}, tok.Subject)))
	})
}

// hasAll reports whether tok grants every one of scopes.
func hasAll(tok oidc.Token, scopes []string) bool {
	for _, sc := range scopes {
		if !tok.HasScope(sc) {
			return false
		}
	}
	return true
}

// Subject returns the subject (sub) of the bearer token the request was
// admitted with, or "" when it had none: an open API, an open route, or
// the static admin token.
func Subject(ctx context.Context) string {
	s, _ := ctx.Value(subjectKey{}).(string)
	return s
}

// headerText makes s fit an auth-param's quoted string as RFC 6750 §3
// allows in error_description (printable ASCII without '"' and '\'), in at
// most 200 bytes.
func headerText(s string) string {
	b := make([]byte, 0, min(len(s), 200))
	for i := 0; i < len(s) && len(b) < 200; i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\'')
		case c >= 0x20 && c <= 0x7e:
			b = append(b, c)
		}
	}
	return string(b)
}
