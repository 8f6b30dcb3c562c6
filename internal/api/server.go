// Package api is orderd's HTTP interface: commands that go through the
// aggregate handler, queries served from the read models, and the event
// history from the store. Errors become RFC 9457 problems in problem.go.
package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

// Queries is the read side the API serves GETs from.
type Queries interface {
	Order(ctx context.Context, id uuid.UUID, minVersion int64) (readmodel.Order, error)
	Customer(ctx context.Context, id uuid.UUID, minVersion int64) (readmodel.Customer, error)
	CustomerOrders(ctx context.Context, customerID, after uuid.UUID, limit int) ([]readmodel.OrderSummary, error)
}

// History reads an aggregate's stored events.
type History interface {
	Load(ctx context.Context, aggregateID uuid.UUID, after int64) ([]store.Event, error)
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
	adminToken string
}

// New returns a server. spec is the OpenAPI document served at
// /openapi.yaml.
func New(commands *aggregate.Handler, queries Queries, history History, ready Readiness, spec []byte, log *zap.Logger) *Server {
	return &Server{commands: commands, queries: queries, history: history, ready: ready, spec: spec, log: log}
}

// WithMetrics counts and times commands in m and serves gatherer's series
// at /metrics.
func (s *Server) WithMetrics(m *Metrics, gatherer prometheus.Gatherer) *Server {
	s.metrics, s.gatherer = m, gatherer
	return s
}

// Handler returns the routes.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(s.correlate, s.recoverPanics)
	r.NotFound(s.handle(func(http.ResponseWriter, *http.Request) error {
		return httpError(errNoRoute, "not_found", "no such route")
	}))
	r.MethodNotAllowed(s.handle(func(http.ResponseWriter, *http.Request) error {
		return httpError(errNoMethod, "method_not_allowed", "this route does not take that method")
	}))

	r.Get("/healthz", s.handle(s.healthz))
	r.Get("/readyz", s.handle(s.readyz))
	r.Get("/openapi.yaml", s.handle(s.openapi))
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
	s.mountAdmin(r)
	return r
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
	return writeJSON(w, code, map[string]any{"status": status, "components": components})
}

func (s *Server) openapi(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/yaml")
	_, err := w.Write(s.spec)
	return err
}
