package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
)

type registerCustomerRequest struct {
	ID        *string `json:"id"` // nil: the server picks one; "" is refused like any non-UUID
	Email     string  `json:"email"`
	FirstName string  `json:"first_name"`
	LastName  string  `json:"last_name"`
	Phone     string  `json:"phone"`
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
	id, minted, err := newID(r, req.ID)
	if err != nil {
		return err
	}
	meta, err := s.meta(r, id)
	if err != nil {
		return err
	}
	meta.Minted = minted
	v, err := s.commands.RegisterCustomer(r.Context(), id, meta, req.Email, req.FirstName, req.LastName, req.Phone)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/customers/"+id.String())
	return writeCommandResult(w, http.StatusCreated, id, v)
}

func (s *Server) changeEmail(w http.ResponseWriter, r *http.Request) error {
	var req changeEmailRequest
	return s.customerCommand(w, r, &req,
		func() error {
			_, err := aggregate.CheckEmail(req.Email)
			return err
		},
		func(c *aggregate.Customer, now time.Time) ([]aggregate.Event, error) {
			return c.ChangeEmail(req.Email, now)
		})
}

func (s *Server) changePhone(w http.ResponseWriter, r *http.Request) error {
	var req changePhoneRequest
	return s.customerCommand(w, r, &req,
		func() error {
			_, err := aggregate.CheckPhone(req.Phone)
			return err
		},
		func(c *aggregate.Customer, now time.Time) ([]aggregate.Event, error) {
			return c.ChangePhone(req.Phone, now)
		})
}

// customerCommand runs a command on an existing customer; see
// existingCommand.
func (s *Server) customerCommand(w http.ResponseWriter, r *http.Request, req any, check func() error,
	decide func(*aggregate.Customer, time.Time) ([]aggregate.Event, error),
) error {
	return s.existingCommand(w, r, req, false, check,
		func(ctx context.Context, id uuid.UUID, meta aggregate.Meta) (int64, error) {
			return s.commands.Customer(ctx, id, meta, decide)
		})
}

type customerJSON struct {
	ID           uuid.UUID `json:"id"`
	Email        string    `json:"email"`
	FirstName    string    `json:"first_name"`
	LastName     string    `json:"last_name"`
	Phone        *string   `json:"phone"`
	Erased       bool      `json:"erased"`
	Version      int64     `json:"version"`
	RegisteredAt time.Time `json:"registered_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// getCustomer answers the customer from the read model, or with
// ?as_of_version or ?as_of its state in the past, folded from the event
// store.
func (s *Server) getCustomer(w http.ResponseWriter, r *http.Request) error {
	id, err := pathID(r)
	if err != nil {
		return err
	}
	min, at, err := readParams(r)
	if err != nil {
		return err
	}
	var c readmodel.Customer
	if at.past() {
		c, err = pastState(r.Context(), s, aggregate.CustomerType, id, at, s.customerAt)
	} else {
		c, err = s.queries.Customer(r.Context(), id, min)
		err = readError(err, aggregate.CustomerType, id)
	}
	if err != nil {
		return err
	}
	w.Header().Set("ETag", etag(c.Version))
	return writeJSON(w, http.StatusOK, customerJSON{
		ID: c.ID, Email: c.Email, FirstName: c.FirstName, LastName: c.LastName,
		Phone: nullable(c.Phone), Erased: c.Erased(), Version: c.Version, RegisteredAt: c.RegisteredAt, UpdatedAt: c.UpdatedAt,
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
	n, err := queryInt(r, "limit", 1, 500, 100, "a whole number from 1 to 500")
	if err != nil {
		return err
	}
	limit := int(n)
	var after uuid.UUID
	a, ok, err := query(r, "after")
	if err != nil {
		return err
	}
	if ok {
		var why string
		if after, why = uuidOf(a); why != "" {
			return invalid("invalid_query", "after", "after %s", why)
		}
	}
	// One more than asked tells whether another page follows.
	rows, err := s.queries.CustomerOrders(r.Context(), id, after, limit+1)
	if errors.Is(err, readmodel.ErrNotFound) {
		return notFound(aggregate.CustomerType, id)
	}
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
	return s.events(w, r, aggregate.CustomerType)
}
