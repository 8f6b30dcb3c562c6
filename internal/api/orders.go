package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
)

type itemJSON struct {
	ProductID string `json:"product_id"`
	Quantity  int    `json:"quantity"`
}

type createOrderRequest struct {
	ID         string     `json:"id"`
	CustomerID string     `json:"customer_id"`
	Items      []itemJSON `json:"items"`
}

type updateItemsRequest struct {
	Items []itemJSON `json:"items"`
}

type shipRequest struct {
	TrackingNumber string `json:"tracking_number"`
	Carrier        string `json:"carrier"`
}

type deliverRequest struct {
	Signature string `json:"signature"`
}

type cancelRequest struct {
	Reason string `json:"reason"`
}

// items parses the product ids; the aggregate checks the rest.
func items(in []itemJSON) ([]aggregate.Item, error) {
	out := make([]aggregate.Item, len(in))
	for i, it := range in {
		id, err := parseUUID(it.ProductID, fmt.Sprintf("/items/%d/product_id", i))
		if err != nil {
			return nil, err
		}
		out[i] = aggregate.Item{ProductID: id, Quantity: it.Quantity}
	}
	return out, nil
}

func (s *Server) createOrder(w http.ResponseWriter, r *http.Request) error {
	var req createOrderRequest
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
	customerID, err := parseUUID(req.CustomerID, "/customer_id")
	if err != nil {
		return err
	}
	its, err := items(req.Items)
	if err != nil {
		return err
	}
	meta, err := s.meta(r, "CreateOrder")
	if err != nil {
		return err
	}
	v, err := s.commands.CreateOrder(r.Context(), id, meta, customerID, its)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/orders/"+id.String())
	return writeCommandResult(w, http.StatusCreated, id, v)
}

func (s *Server) updateItems(w http.ResponseWriter, r *http.Request) error {
	var req updateItemsRequest
	return s.orderCommand(w, r, "UpdateItems", &req, false, func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) {
		its, err := items(req.Items)
		if err != nil {
			return nil, err
		}
		return o.UpdateItems(its, now)
	})
}

func (s *Server) confirmOrder(w http.ResponseWriter, r *http.Request) error {
	var req struct{}
	return s.orderCommand(w, r, "ConfirmOrder", &req, true, func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) {
		return o.Confirm(now)
	})
}

func (s *Server) shipOrder(w http.ResponseWriter, r *http.Request) error {
	var req shipRequest
	return s.orderCommand(w, r, "ShipOrder", &req, false, func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) {
		return o.Ship(req.TrackingNumber, req.Carrier, now)
	})
}

func (s *Server) deliverOrder(w http.ResponseWriter, r *http.Request) error {
	var req deliverRequest
	return s.orderCommand(w, r, "DeliverOrder", &req, true, func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) {
		return o.Deliver(req.Signature, now)
	})
}

func (s *Server) cancelOrder(w http.ResponseWriter, r *http.Request) error {
	var req cancelRequest
	return s.orderCommand(w, r, "CancelOrder", &req, true, func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) {
		return o.Cancel(req.Reason, now)
	})
}

// orderCommand runs a command on an existing order.
func (s *Server) orderCommand(w http.ResponseWriter, r *http.Request, name string, req any, optional bool, decide func(*aggregate.Order, time.Time) ([]aggregate.Event, error)) error {
	return s.existingCommand(w, r, name, req, optional, func(ctx context.Context, id uuid.UUID, meta aggregate.Meta) (int64, error) {
		return s.commands.Order(ctx, id, meta, decide)
	})
}

// existingCommand is the one path of every command on an existing
// aggregate: parse the id, decode the body into req (which may be
// optional), read If-Match, then let run load, decide and append.
func (s *Server) existingCommand(w http.ResponseWriter, r *http.Request, name string, req any, optional bool, run func(context.Context, uuid.UUID, aggregate.Meta) (int64, error)) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	if err := decode(r, req, optional); err != nil {
		return err
	}
	meta, err := s.meta(r, name)
	if err != nil {
		return err
	}
	v, err := run(r.Context(), id, meta)
	if err != nil {
		return err
	}
	return writeCommandResult(w, http.StatusOK, id, v)
}

// meta is what every command carries besides its fields.
func (s *Server) meta(r *http.Request, command string) (aggregate.Meta, error) {
	expected, err := expectedVersion(r)
	if err != nil {
		return aggregate.Meta{}, err
	}
	return aggregate.Meta{
		CommandID:     uuid.Must(uuid.NewV7()),
		CorrelationID: correlationID(r.Context()),
		Expected:      expected,
		Metadata:      map[string]string{"command": command},
	}, nil
}

type commandResult struct {
	ID      uuid.UUID `json:"id"`
	Version int64     `json:"version"`
}

func writeCommandResult(w http.ResponseWriter, status int, id uuid.UUID, version int64) error {
	w.Header().Set("ETag", etag(version))
	return writeJSON(w, status, commandResult{ID: id, Version: version})
}

type orderJSON struct {
	ID              uuid.UUID        `json:"id"`
	CustomerID      uuid.UUID        `json:"customer_id"`
	Status          string           `json:"status"`
	Items           []aggregate.Item `json:"items"`
	TrackingNumber  *string          `json:"tracking_number"`
	Carrier         *string          `json:"carrier"`
	CancelledReason *string          `json:"cancelled_reason"`
	Version         int64            `json:"version"`
	CreatedAt       time.Time        `json:"created_at"`
	UpdatedAt       time.Time        `json:"updated_at"`
}

func (s *Server) getOrder(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	min, err := minVersion(r)
	if err != nil {
		return err
	}
	o, err := s.queries.Order(r.Context(), id, min)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", etag(o.Version))
	return writeJSON(w, http.StatusOK, orderOut(o))
}

func orderOut(o readmodel.Order) orderJSON {
	items := o.Items
	if items == nil {
		items = []aggregate.Item{}
	}
	return orderJSON{
		ID: o.ID, CustomerID: o.CustomerID, Status: o.Status, Items: items,
		TrackingNumber: nullable(o.TrackingNumber), Carrier: nullable(o.Carrier),
		CancelledReason: nullable(o.CancelledReason),
		Version:         o.Version, CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt,
	}
}

// nullable is how optional strings are answered: null, not "", when unset.
func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func (s *Server) orderEvents(w http.ResponseWriter, r *http.Request) error {
	return s.events(w, r, aggregate.OrderType, "order_not_found")
}
