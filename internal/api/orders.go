package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/telemetry"
)

type itemJSON struct {
	ProductID string `json:"product_id"`
	Quantity  int    `json:"quantity"`
}

type createOrderRequest struct {
	ID         *string    `json:"id"` // nil: the server picks one; "" is refused like any non-UUID
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

// newID returns the client's id for a new aggregate, or else the id a keyed
// request's record gives it (see keyedID), or else a new one, which only
// this request knows (minted: see aggregate.Meta.Minted).
func newID(r *http.Request, id *string) (_ uuid.UUID, minted bool, _ error) {
	if id == nil {
		if keyed, ok := keyedID(r); ok {
			return keyed, false, nil
		}
		return uuid.Must(uuid.NewV7()), true, nil
	}
	parsed, err := parseUUID(*id, "/id")
	return parsed, false, err
}

func (s *Server) createOrder(w http.ResponseWriter, r *http.Request) error {
	var req createOrderRequest
	if err := decode(r, &req, false); err != nil {
		return err
	}
	id, minted, err := newID(r, req.ID)
	if err != nil {
		return err
	}
	customerID, err := parseUUID(req.CustomerID, "/customer_id")
	if err != nil {
		return err
	}
	its, err := items(req.Items)
	if err != nil {
		return err
	}
	meta, err := s.meta(r, id)
	if err != nil {
		return err
	}
	meta.Minted = minted
	// Input, then existence: the items before the customer is looked up.
	if _, err := aggregate.CheckItems(its); err != nil {
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
	var its []aggregate.Item
	return s.orderCommand(w, r, &req, false,
		func() (err error) {
			if its, err = items(req.Items); err != nil {
				return err
			}
			_, err = aggregate.CheckItems(its)
			return err
		},
		func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) {
			return o.UpdateItems(its, now)
		})
}

func (s *Server) confirmOrder(w http.ResponseWriter, r *http.Request) error {
	var req struct{}
	return s.orderCommand(w, r, &req, true, nil, func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) {
		return o.Confirm(now)
	})
}

func (s *Server) shipOrder(w http.ResponseWriter, r *http.Request) error {
	var req shipRequest
	return s.orderCommand(w, r, &req, false,
		func() error {
			_, _, err := aggregate.CheckShipment(req.TrackingNumber, req.Carrier)
			return err
		},
		func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) {
			return o.Ship(req.TrackingNumber, req.Carrier, now)
		})
}

func (s *Server) deliverOrder(w http.ResponseWriter, r *http.Request) error {
	var req deliverRequest
	return s.orderCommand(w, r, &req, true,
		func() error {
			_, err := aggregate.CheckSignature(req.Signature)
			return err
		},
		func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) {
			return o.Deliver(req.Signature, now)
		})
}

func (s *Server) cancelOrder(w http.ResponseWriter, r *http.Request) error {
	var req cancelRequest
	return s.orderCommand(w, r, &req, true,
		func() error {
			_, err := aggregate.CheckReason(req.Reason)
			return err
		},
		func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) {
			return o.Cancel(req.Reason, now)
		})
}

// orderCommand runs a command on an existing order; see existingCommand.
func (s *Server) orderCommand(w http.ResponseWriter, r *http.Request, req any, optional bool, check func() error,
	decide func(*aggregate.Order, time.Time) ([]aggregate.Event, error),
) error {
	return s.existingCommand(w, r, req, optional, check,
		func(ctx context.Context, id uuid.UUID, meta aggregate.Meta) (int64, error) {
			return s.commands.Order(ctx, id, meta, decide)
		})
}

// existingCommand is the one path of every command on an existing
// aggregate, in the API's one order of precedence: input, then existence,
// then state. It parses the id, decodes the body into req (which may be
// optional), reads If-Match, and has check (nil: none) refuse invalid
// input, all before anything is loaded; then run loads, decides and
// appends, and answers 404 for an aggregate that does not exist before any
// refusal of its state.
//
// check calls the aggregate's own checks of the command's input (such as
// aggregate.CheckItems), which its decision calls too: the rules stay
// written once, in the aggregate, and the API knows nothing of the states
// in which a command is allowed.
func (s *Server) existingCommand(w http.ResponseWriter, r *http.Request, req any, optional bool,
	check func() error, run func(context.Context, uuid.UUID, aggregate.Meta) (int64, error),
) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	if err := decode(r, req, optional); err != nil {
		return err
	}
	meta, err := s.meta(r, id)
	if err != nil {
		return err
	}
	if check != nil {
		if err := check(); err != nil {
			return err
		}
	}
	v, err := run(r.Context(), id, meta)
	if err != nil {
		return err
	}
	return writeCommandResult(w, http.StatusOK, id, v)
}

// meta is what every command on aggregate id carries besides its fields:
// its name, as its route gave it (see command), and its Idempotency-Key,
// if any (see Idempotency), go into every event's metadata.
func (s *Server) meta(r *http.Request, id uuid.UUID) (aggregate.Meta, error) {
	expected, err := expectedVersion(r)
	if err != nil {
		return aggregate.Meta{}, err
	}
	md := map[string]string{"command": commandName(r.Context())}
	// The command's trace context, sampled or not, so that the relay's
	// publish and a consumer continue its trace.
	telemetry.Inject(r.Context(), md)
	if err := attachIdempotencyKey(r, id, md); err != nil {
		return aggregate.Meta{}, err
	}
	return aggregate.Meta{
		CommandID:     uuid.Must(uuid.NewV7()),
		CorrelationID: correlationID(r.Context()),
		Expected:      expected,
		Metadata:      md,
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

// getOrder answers the order from the read model, or with ?as_of_version
// or ?as_of its state in the past, folded from the event store.
func (s *Server) getOrder(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	min, at, err := readParams(r)
	if err != nil {
		return err
	}
	var o readmodel.Order
	if at.past() {
		o, err = pastState(r.Context(), s, aggregate.OrderType, id, at, s.orderAt)
	} else {
		o, err = s.queries.Order(r.Context(), id, min)
		err = readError(err, aggregate.OrderType, id)
	}
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
	return s.events(w, r, aggregate.OrderType)
}
