package aggregate

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// uncertainStore is a real store whose Append reports an unknown outcome
// (store.ErrOutcomeUnknown), as the CQL store does when a stalled node
// leaves a transaction unsettled, after storing the events (land) or not.
// A rival first stores another command's events at the same version,
// as a racing create would have.
type uncertainStore struct {
	EventStore
	land  bool
	rival func(id uuid.UUID)
}

func (s *uncertainStore) Append(ctx context.Context, id uuid.UUID, expected int64, events []store.Event) error {
	if s.rival != nil {
		s.rival(id)
	}
	if s.land {
		if err := s.EventStore.Append(ctx, id, expected, events); err != nil {
			return err
		}
	}
	return fmt.Errorf("append %s: %w: no answer within the deadline", id, store.ErrOutcomeUnknown)
}

// TestHandlerUncertainAppend: a create whose append's outcome is unknown is
// answered as its success when its own events are stored, as a conflict
// (ErrExists) only when another command's are, and as the store's
// unavailability otherwise: never a false "already exists".
func TestHandlerUncertainAppend(t *testing.T) {
	ctx := context.Background()
	items := []Item{{ProductID: uuid.New(), Quantity: 1}}
	base := openStore(t)
	setup := newTestHandler(t, base, time.Now)
	registerCustomer(t, setup, customerID)

	st := &uncertainStore{EventStore: base, land: true}
	h := newTestHandler(t, st, time.Now)
	meta := Meta{CommandID: uuid.New(), CorrelationID: uuid.New(), Expected: AnyVersion}
	stored := uuid.New()
	if v, err := h.CreateOrder(ctx, stored, meta, customerID, items); err != nil || v != 1 {
		t.Fatalf("create whose events landed: version %d, %v; want 1, nil", v, err)
	}
	evs, err := base.Load(ctx, stored, 0)
	if err != nil || len(evs) != 1 || evs[0].CausationID != meta.CommandID {
		t.Fatalf("the create's events: %+v, %v", evs, err)
	}

	st.land = false
	lost := uuid.New()
	_, err = h.CreateOrder(ctx, lost, meta, customerID, items)
	if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, ErrExists) || errors.Is(err, store.ErrConflict) {
		t.Fatalf("create whose events are not (yet) there: %v; want ErrUnavailable, not ErrExists", err)
	}

	taken := uuid.New()
	st.rival = func(id uuid.UUID) {
		st.rival = nil
		if _, err := setup.CreateOrder(ctx, id, Meta{CommandID: uuid.New(), Expected: AnyVersion}, customerID, items); err != nil {
			t.Errorf("rival create: %v", err)
		}
	}
	if _, err := h.CreateOrder(ctx, taken, meta, customerID, items); !errors.Is(err, ErrExists) {
		t.Fatalf("create whose version another command took: %v; want ErrExists", err)
	}
}
