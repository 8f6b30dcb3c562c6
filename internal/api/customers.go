package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
)

type registerCustomerRequest struct {
	ID        string `json:"id"`
	Email     string `json:"email"`
	FirstName string `json:"first_name"`
	LastName  string `json:"last_name"`
	Phone     string `json:"phone"`
}

type changeEmailRequest struct {
	Email string `json:"email"`
}

type changePhoneRequest struct {
	Phone string `json:"phone"`
}

func (s *Server) registerCustomer(w http.ResponseWriter, r *http.Request) error {
	var req registerCustomerRequest
	if err := decode(r, &req, false); err != nil {
		return err
	}
	id := uuid.Must(uuid.NewV7())
	if req.ID != "" {
		var err error
		if id, err = parseUUID(req.ID, "/id"); err != nil {
			return err
		}
	}
	meta, err := s.meta(r, "RegisterCustomer")
	if err != nil {
		return err
	}
	v, err := s.commands.RegisterCustomer(r.Context(), id, meta, req.Email, req.FirstName, req.LastName, req.Phone)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/customers/"+id.String())
	return writeCommandResult(w, http.StatusCreated, id, v)
}

func (s *Server) changeEmail(w http.ResponseWriter, r *http.Request) error {
	var req changeEmailRequest
	return s.customerCommand(w, r, "ChangeEmail", &req, func(c *aggregate.Customer, now time.Time) ([]aggregate.Event, error) {
		return c.ChangeEmail(req.Email, now)
	})
}

func (s *Server) changePhone(w http.ResponseWriter, r *http.Request) error {
	var req changePhoneRequest
	return s.customerCommand(w, r, "ChangePhone", &req, func(c *aggregate.Customer, now time.Time) ([]aggregate.Event, error) {
		return c.ChangePhone(req.Phone, now)
	})
}

// customerCommand runs a command on an existing customer.
func (s *Server) customerCommand(w http.ResponseWriter, r *http.Request, name string, req any, decide func(*aggregate.Customer, time.Time) ([]aggregate.Event, error)) error {
	return s.existingCommand(w, r, name, req, false, func(ctx context.Context, id uuid.UUID, meta aggregate.Meta) (int64, error) {
		return s.commands.Customer(ctx, id, meta, decide)
	})
}

type customerJSON struct {
	ID           uuid.UUID `json:"id"`
	Email        string    `json:"email"`
	FirstName    string    `json:"first_name"`
	LastName     string    `json:"last_name"`
	Phone        *string   `json:"phone"`
	Version      int64     `json:"version"`
	RegisteredAt time.Time `json:"registered_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

func (s *Server) getCustomer(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	min, err := minVersion(r)
	if err != nil {
		return err
	}
	c, err := s.queries.Customer(r.Context(), id, min)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", etag(c.Version))
	return writeJSON(w, http.StatusOK, customerJSON{
		ID: c.ID, Email: c.Email, FirstName: c.FirstName, LastName: c.LastName,
		Phone: nullable(c.Phone), Version: c.Version, RegisteredAt: c.RegisteredAt, UpdatedAt: c.UpdatedAt,
	})
}

type orderSummaryJSON struct {
	ID        uuid.UUID `json:"id"`
	Status    string    `json:"status"`
	ItemCount int       `json:"item_count"`
	Quantity  int       `json:"quantity"`
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

type customerOrdersJSON struct {
	CustomerID uuid.UUID          `json:"customer_id"`
	Orders     []orderSummaryJSON `json:"orders"`
	NextAfter  *uuid.UUID         `json:"next_after"`
}

// customerOrders pages through orders_by_customer in order id order.
func (s *Server) customerOrders(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	limit := 100
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 500 {
			return aggregate.Invalid("invalid_query", "limit", "limit must be a whole number from 1 to 500, not %q", l)
		}
		limit = n
	}
	var after uuid.UUID
	if a := q.Get("after"); a != "" {
		if after, err = parseUUID(a, "after"); err != nil {
			return err
		}
	}
	// One more than asked tells whether another page follows.
	rows, err := s.queries.CustomerOrders(r.Context(), id, after, limit+1)
	if err != nil {
		return err
	}
	out := customerOrdersJSON{CustomerID: id, Orders: []orderSummaryJSON{}}
	if len(rows) > limit {
		rows = rows[:limit]
		next := rows[limit-1].ID
		out.NextAfter = &next
	}
	for _, o := range rows {
		out.Orders = append(out.Orders, orderSummaryJSON{
			ID: o.ID, Status: o.Status, ItemCount: o.ItemCount, Quantity: o.Quantity,
			Version: o.Version, CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt,
		})
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) customerEvents(w http.ResponseWriter, r *http.Request) error {
	return s.events(w, r, aggregate.CustomerType, "customer_not_found")
}

type eventJSON struct {
	EventID       uuid.UUID         `json:"event_id"`
	AggregateID   uuid.UUID         `json:"aggregate_id"`
	AggregateType string            `json:"aggregate_type"`
	Sequence      int64             `json:"sequence"`
	EventType     string            `json:"event_type"`
	EventVersion  int               `json:"event_version"`
	Data          json.RawMessage   `json:"data"`
	CausationID   uuid.UUID         `json:"causation_id"`
	CorrelationID uuid.UUID         `json:"correlation_id"`
	Timestamp     time.Time         `json:"timestamp"`
	Metadata      map[string]string `json:"metadata"`
}

// events answers the stored envelopes of one aggregate, straight from the
// event store, upcast to the current schema.
func (s *Server) events(w http.ResponseWriter, r *http.Request, aggType, notFound string) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	stored, err := s.history.Load(r.Context(), id, 0)
	if err != nil {
		return err
	}
	if len(stored) == 0 || stored[0].AggregateType != aggType {
		return &aggregate.Error{Kind: aggregate.ErrNotFound, Code: notFound, Detail: "no " + aggType + " has id " + id.String()}
	}
	out := make([]eventJSON, len(stored))
	for i, e := range stored {
		out[i] = envelopeOut(e)
	}
	w.Header().Set("ETag", etag(stored[len(stored)-1].Sequence))
	return writeJSON(w, http.StatusOK, map[string]any{"events": out})
}
