// Package api is orderd's HTTP interface: commands that go through the
// aggregate handler, queries served from the read models, and the event
// history from the store. Errors become RFC 9457 problems in problem.go.
package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
)

// Queries is the read side the API serves GETs from.
type Queries interface {
	Order(ctx context.Context, id uuid.UUID, minVersion int64) (readmodel.Order, error)
	Customer(ctx context.Context, id uuid.UUID, minVersion int64) (readmodel.Customer, error)
	CustomerOrders(ctx context.Context, customerID, after uuid.UUID, limit int) ([]readmodel.OrderSummary, error)
}

// Component is one part of the service as /readyz reports it.
type Component struct {
	Status string `json:"status"` // "up", "degraded" (working, with a problem to look at), "off" or "down" (not ready)
	Detail string `json:"detail,omitempty"`
	Lag    *int64 `json:"lag,omitempty"` // events not yet processed, where it applies

	// Of a worker that one instance runs while the others stand by: this
	// instance's role ("active" or "standby") and the instance that is
	// active, as far as this one knows.
	Role   string `json:"role,omitempty"`
	Active string `json:"active,omitempty"`
	// LagSeconds is how long the oldest event not yet processed has
	// waited, where it is known.
	LagSeconds *float64 `json:"lag_seconds,omitempty"`
	// Epoch is the fencing epoch of this instance's last take of the
	// worker's lease (store.Fence), 0 before the first; Fenced how many of
	// the worker's runs here a write refused for a later epoch ended.
	Epoch  int64 `json:"epoch,omitempty"`
	Fenced int64 `json:"fenced,omitempty"`

	// Of a worker split into shards: how many this instance holds, the
	// instances that share them out, and every shard with its holder, as
	// this instance's balancer last saw them.
	Held    *int          `json:"held,omitempty"`
	Members []string      `json:"members,omitempty"`
	Shards  []ShardHolder `json:"shards,omitempty"`
}

// ShardHolder is one shard of a worker split into shards in /readyz.
type ShardHolder struct {
	Shard  int    `json:"shard"`
	Holder string `json:"holder,omitempty"`
	Epoch  int64  `json:"epoch,omitempty"`
	Here   bool   `json:"here,omitempty"`
}

// Readiness reports the state of each component by name.
type Readiness func(ctx context.Context) map[string]Component

// Server serves the HTTP API.
type Server struct {
	commands *aggregate.Handler
	queries  Queries
	history  History
	ready    Readiness
	spec     []byte
	log      *zap.Logger

	metrics  *Metrics
	gatherer prometheus.Gatherer

	admin      DeadLetters // see WithAdmin, in admin.go
	dataKeys   DataKeys    // see WithKeys, in erasure.go
	adminToken string
	rebuilds   Rebuilds // see WithRebuilds, in rebuild.go
	backups    Backups  // see WithBackups, in backup.go

	idem  *Idempotency // see WithIdempotency
	async []byte       // the AsyncAPI document; see WithAsyncAPI

	stream *Stream // GET /v1/events/stream; see WithStream, in sse.go

	console http.Handler // the operator console at /console; see WithConsole

	limit  *RateLimiter  // quotas of the /v1 routes; see WithRateLimit, in ratelimit.go
	tokens TokenVerifier // bearer tokens of the API; nil: open. See WithTokens, in auth.go
}

// New returns a server. spec is the OpenAPI document served at
// /openapi.yaml.
func New(commands *aggregate.Handler, queries Queries, history History, ready Readiness, spec []byte, log *zap.Logger) *Server {
	return &Server{commands: commands, queries: queries, history: history, ready: ready, spec: spec, log: log}
}

// WithAsyncAPI serves spec, the AsyncAPI document of the events orderd
// publishes, at /asyncapi.yaml.
func (s *Server) WithAsyncAPI(spec []byte) *Server {
	s.async = spec
	return s
}

// WithIdempotency makes every command route honour Idempotency-Key through
// m. Call it before Handler.
func (s *Server) WithIdempotency(m *Idempotency) *Server {
	s.idem = m
	return s
}

// WithMetrics counts and times commands in m and serves gatherer's series
// at /metrics.
func (s *Server) WithMetrics(m *Metrics, gatherer prometheus.Gatherer) *Server {
	s.metrics, s.gatherer = m, gatherer
	return s
}

// WithConsole serves h, the operator console, at /console and every path
// under it, and redirects / there. The console is pages and scripts, not
// part of the API: neither is in openapi.yaml.
func (s *Server) WithConsole(h http.Handler) *Server {
	s.console = h
	return s
}

// Handler returns the routes. Every GET route answers HEAD as well; a
// route asked with a method it does not take answers 405 with Allow, and
// OPTIONS answers 204 with Allow on every route (RFC 9110).
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(s.traced, s.correlate, s.recoverPanics, middleware.GetHead)
	// The token is checked before the quota, so that the quota can key a
	// client by its token's subject (see ClientKey).
	if s.tokens != nil {
		r.Use(s.authenticate)
	}
	if s.limit != nil {
		r.Use(s.limit.Middleware)
	}
	r.NotFound(s.handle(func(http.ResponseWriter, *http.Request) error {
		return &aggregate.Error{Kind: errNoRoute, Code: "not_found", Detail: "no such route"}
	}))
	r.MethodNotAllowed(s.handle(func(w http.ResponseWriter, req *http.Request) error {
		allow := allowed(r, req.URL.Path)
		w.Header().Set("Allow", allow)
		if req.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
		return &aggregate.Error{Kind: errNoMethod, Code: "method_not_allowed",
			Detail: fmt.Sprintf("%s is not allowed here; this route takes %s", sanitize(req.Method, maxEcho), allow)}
	}))

	r.Get("/healthz", s.handle(s.healthz))
	r.Get("/readyz", s.handle(s.readyz))
	r.Get("/openapi.yaml", s.handle(yamlDocument(s.spec)))
	if s.async != nil {
		r.Get("/asyncapi.yaml", s.handle(yamlDocument(s.async)))
	}
	if s.gatherer != nil {
		r.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}))
	}

	r.Route("/v1/customers", func(r chi.Router) {
		r.Post("/", s.command("RegisterCustomer", s.registerCustomer))
		r.Get("/{id}", s.handle(s.getCustomer))
		r.Post("/{id}/email", s.command("ChangeEmail", s.changeEmail))
		r.Post("/{id}/phone", s.command("ChangePhone", s.changePhone))
		r.Get("/{id}/orders", s.handle(s.customerOrders))
		r.Get("/{id}/events", s.handle(s.customerEvents))
		s.mountErasure(r)
	})
	r.Route("/v1/orders", func(r chi.Router) {
		r.Post("/", s.command("CreateOrder", s.createOrder))
		r.Get("/{id}", s.handle(s.getOrder))
		r.Get("/{id}/events", s.handle(s.orderEvents))
		r.Put("/{id}/items", s.command("UpdateItems", s.updateItems))
		r.Post("/{id}/confirm", s.command("ConfirmOrder", s.confirmOrder))
		r.Post("/{id}/ship", s.command("ShipOrder", s.shipOrder))
		r.Post("/{id}/deliver", s.command("DeliverOrder", s.deliverOrder))
		r.Post("/{id}/cancel", s.command("CancelOrder", s.cancelOrder))
	})
	r.Get("/v1/events/stream", s.handle(s.eventStream))
	s.mountAdmin(r)
	s.mountKeys(r)
	if s.console != nil {
		r.Mount("/console", s.console)
		// A browser pointed at the server finds the console. 302, not a
		// permanent 301 or 308: browsers keep a permanent redirect for
		// good, and / is not a page that moved, it has none of its own (an
		// orderd without the console answers 404 there).
		r.Get("/", func(w http.ResponseWriter, req *http.Request) {
			http.Redirect(w, req, "/console", http.StatusFound)
		})
	}
	return r
}

// allowed is the Allow header of path on routes: the methods it has a
// route for, HEAD with GET, and OPTIONS.
func allowed(routes chi.Routes, path string) string {
	if routes.Match(chi.NewRouteContext(), http.MethodTrace, path) {
		// No route takes TRACE: path is where a subrouter is mounted, which
		// chi matches for every method; its root route says what it takes.
		for _, rt := range routes.Routes() {
			if rt.SubRoutes != nil && rt.Pattern == strings.TrimSuffix(path, "/")+"/*" {
				routes, path = rt.SubRoutes, "/"
			}
		}
	}
	var methods []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := m
		if m == http.MethodHead {
			probe = http.MethodGet // GetHead answers HEAD with the GET route
		}
		if routes.Match(chi.NewRouteContext(), probe, path) {
			methods = append(methods, m)
		}
	}
	return strings.Join(append(methods, http.MethodOptions), ", ")
}

// handle adapts a handler that returns an error: the error becomes the
// problem response.
func (s *Server) handle(fn func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			writeError(w, r, err)
		}
	}
}

func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				writeError(w, r, fmt.Errorf("panic: %v", v))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	components := s.ready(ctx)
	status, code := "ready", http.StatusOK
	for _, c := range components {
		if c.Status == "down" {
			status, code = "not_ready", http.StatusServiceUnavailable
		}
	}
	return writeJSON(w, code, map[string]any{"status": status, "auth": s.AuthMode(), "components": components})
}

// yamlDocument serves a YAML document (the API's contracts).
func yamlDocument(doc []byte) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "application/yaml")
		_, err := w.Write(doc)
		return err
	}
}
