package aggregate

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// settleAppend looks at what an append that failed with err left in the
// store, when err does not say so by itself: a conflict (the store may have
// seen our own transaction, applied after all, as the other writer) or an
// outcome the store could not learn (store.ErrOutcomeUnknown). It returns
// nil when the event at version v+1 is the first of envs, that is, when
// this very command's events are stored: the command succeeded. It returns
// a conflict when another command's event holds v+1, and err otherwise: an
// unknown outcome stays unknown (a 503, never a refusal) when nothing is
// there yet or the read fails.
func settleAppend(ctx context.Context, st store.Store, id uuid.UUID, v int64, envs []store.Event, err error) error {
	if len(envs) == 0 || !(errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrOutcomeUnknown)) {
		return err
	}
	got, lerr := st.LoadPage(ctx, id, v, 1)
	switch {
	case lerr != nil || len(got) == 0:
		return err
	case got[0].ID == envs[0].ID:
		return nil
	case errors.Is(err, store.ErrConflict):
		return err
	default: // another command took v+1: ours can never apply
		return fmt.Errorf("%w: event %s of another command holds version %d (%v)",
			store.ErrConflict, got[0].ID, v+1, err)
	}
}
