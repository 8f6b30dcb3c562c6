package aggregate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/pii"
	"github.com/orderd/orderd/internal/store"
)

// Unique addresses are kept by claims, written before the customer's own
// write, since the store has no transaction across aggregates:
//
//  1. claim the address: write a row of one's own under the address's key
//     (store.EmailClaims), then read every row of that key; refused
//     ("email_taken"), and the row dropped, while another customer's row
//     holds the address (EmailClaim.heldBy);
//  2. append the customer's event that takes the address.
//
// Neither step of the claim is a lightweight transaction on CQL: the row
// is written, and the rows read, at a quorum. Of two customers claiming
// one address at once, at least one reads the other's row and is refused
// (both may be, and retry); so at most one goes on. A row that no longer
// holds (its customer moved to another address, was erased, or never
// wrote within the TTL) is dropped by the next claim of the address that
// goes ahead. The address a change leaves is not released by a write of
// its own: its row is stale once its customer moved past it.
//
// A crash between the steps leaves a row whose customer does not have
// the address: it holds for the claim TTL (pending), then is stale; its
// own customer may claim again at once.
//
// Claims of earlier builds were event streams (EmailClaimType) under the
// key's id, and before that under a UUIDv5 of the address: they are read,
// never written, so an address claimed before the upgrade stays its
// customer's until that customer moves on.

// WithEmailClaims has the handler keep the claims of addresses in claims
// (the engine's). A handler without it refuses every command that gives
// a customer an address.
func WithEmailClaims(claims store.EmailClaims) Option {
	return func(h *Handler) { h.claims = claims }
}

// customer runs a customer command through handle, claiming the address a
// decision gives the customer before appending it.
//
// A registration under a minted id (Meta.Minted) has no events to look for
// and mints its customer's data key (Keys.Mint, no Paxos round on CQL)
// once its decision stands, before the claim. An address found taken then
// leaves a key that seals nothing.
func (h *Handler) customer(ctx context.Context, id uuid.UUID, meta Meta, create bool, decide func(c *Customer, now time.Time) ([]Event, error)) (int64, error) {
	mint := create && meta.Minted && h.keys != nil
	claim := func(ctx context.Context, c *Customer, v int64, evs []Event, now time.Time) (context.Context, context.CancelFunc, error) {
		if mint {
			mint = false // once: a second key of the subject would race the first
			if _, err := h.keys.Mint(ctx, id); err != nil {
				return nil, nil, fmt.Errorf("aggregate: key of %s: %w", id, err)
			}
		}
		email := takenEmail(evs)
		if email == "" || emailKey(email) == emailKey(c.Email) {
			return ctx, func() {}, nil // no address, or one the customer holds already
		}
		if create && !meta.Minted {
			if err := h.notRegistered(ctx, id); err != nil {
				return nil, nil, err
			}
		}
		// The customer write must be over within claimHold of the claim;
		// the deadline starts before the claim, so it is never later.
		actx, cancel := context.WithTimeout(ctx, h.claimHold)
		if err := h.claim(ctx, email, id, v, now); err != nil {
			cancel()
			return nil, nil, err
		}
		return actx, cancel, nil
	}
	return handle[Customer](ctx, h, CustomerType, id, meta, create, decide, claim)
}

// takenEmail returns the address that evs give their customer, or "".
func takenEmail(evs []Event) string {
	var email string
	for _, e := range evs {
		switch e := e.(type) {
		case CustomerRegistered:
			email = e.Email
		case CustomerEmailChanged:
			email = e.Email
		}
	}
	return email
}

// notRegistered returns an ErrExists error ("customer_exists") when id has
// events. A create is decided on a zero customer without reading it, and
// its append at version 0 refuses an existing id; a registration reads it
// before claiming all the same, so that a refused registration leaves no
// claim, and existence is answered before a taken address.
func (h *Handler) notRegistered(ctx context.Context, id uuid.UUID) error {
	events, err := h.store.Load(ctx, id, 0)
	if err != nil {
		return fmt.Errorf("aggregate: load %s: %w", id, err)
	}
	if len(events) > 0 {
		return &Error{Kind: ErrExists, Code: existsCode(CustomerType),
			Detail: fmt.Sprintf("%s %s already exists", CustomerType, id)}
	}
	return nil
}

// claim reserves email for customer, at its version: it writes the
// customer's row and looks at every row of the address, again while
// another customer's claim is in flight (pending), until none is:
//
//   - another customer's row is live: refused ("email_taken");
//   - none holds the address for another customer: the claim goes on, and
//     drops the rows that no longer hold;
//   - another's pending row came before this one's (a smaller attempt, a
//     UUIDv7, so earlier): this one yields, dropping its row, and looks
//     again without writing until that claim settles; then, if nothing
//     holds the address, it writes a new row;
//   - only rows after this one's are pending: it keeps its row and looks
//     again, since their claimants yield to it (or, had they not seen it,
//     go on and turn live, and this one is refused).
//
// Of racing claimants, the earliest that every other saw wins; none goes
// on while another's row holds. Looks are bounded by claimWait: a pending
// row still there then (a claimant that died) refuses as taken, as it
// holds the address for the claim TTL.
func (h *Handler) claim(ctx context.Context, email string, customer uuid.UUID, version int64, now time.Time) error {
	if h.claims == nil {
		return errors.New("aggregate: no store of e-mail claims (WithEmailClaims)")
	}
	key := emailKey(email)
	id := h.claimID(key)
	if err := h.streamClaim(ctx, id, key, customer, now); err != nil {
		return err
	}
	var own store.ClaimRow // none while this claim has no row
	write := func() ([]store.ClaimRow, error) {
		own = store.ClaimRow{Attempt: h.newID(), Customer: customer, Since: version, At: h.now().Truncate(time.Millisecond)}
		rows, err := h.claims.Claim(ctx, id, own)
		if err != nil {
			h.drop(ctx, id, own) // it may have been written: it would hold for the TTL
			return nil, fmt.Errorf("aggregate: claim %s: %w", id, err)
		}
		return rows, nil
	}
	// give up drops this claim's row, if any, and returns err.
	giveUp := func(err error) error {
		if own.Attempt != uuid.Nil {
			h.drop(ctx, id, own)
		}
		return err
	}
	rows, err := write()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(h.claimWait)
	pause := claimPause
	for {
		l, err := h.look(ctx, key, customer, own, rows, now)
		switch {
		case err != nil:
			return giveUp(err)
		case l.live:
			return giveUp(emailTaken())
		case !l.pending && own.Attempt == uuid.Nil:
			if rows, err = write(); err != nil {
				return err
			}
			continue
		case !l.pending:
			h.drop(ctx, id, l.stale...)
			return nil
		case l.before && own.Attempt != uuid.Nil:
			h.drop(ctx, id, own)
			own = store.ClaimRow{}
		}
		if time.Now().Add(pause).After(deadline) {
			return giveUp(emailTaken())
		}
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return giveUp(ctx.Err())
		}
		pause = min(2*pause, maxClaimPause)
		if rows, err = h.claims.Rows(ctx, id); err != nil {
			return giveUp(fmt.Errorf("aggregate: claim %s: %w", id, err))
		}
	}
}

// The pauses between a claim's looks: from claimPause, doubling, up to
// maxClaimPause.
const (
	claimPause    = 5 * time.Millisecond
	maxClaimPause = 100 * time.Millisecond
)

// claimLook is what a claim saw of its address's rows.
type claimLook struct {
	live    bool             // another customer's row is live
	pending bool             // another customer's row is pending
	before  bool             // one of those pending came before the claim's own row
	stale   []store.ClaimRow // the rows that no longer hold
}

// look loads the holders of rows (but own) and tells what they are. A
// row of customer's own that holds (another of its commands, between its
// claim and its write) is neither the others' nor stale: it stays, since
// one of the two writes wins, and its row must be there.
func (h *Handler) look(ctx context.Context, key string, customer uuid.UUID, own store.ClaimRow, rows []store.ClaimRow, now time.Time) (claimLook, error) {
	var l claimLook
	holders := make(map[uuid.UUID]*Customer)
	for _, r := range rows {
		if r.Attempt == own.Attempt {
			continue
		}
		holder, ok := holders[r.Customer]
		if !ok {
			var err error
			if holder, _, err = load[Customer](ctx, h.store, CustomerType, r.Customer); err != nil {
				return l, err
			}
			holders[r.Customer] = holder
		}
		c := EmailClaim{Email: key, Holder: r.Customer, Since: r.Since, At: r.At}
		switch held := c.holding(holder, h.claimTTL, now); {
		case held == stale:
			l.stale = append(l.stale, r)
		case r.Customer == customer:
		case held == live:
			l.live = true
		default:
			l.pending = true
			l.before = l.before || own.Attempt == uuid.Nil || bytes.Compare(r.Attempt[:], own.Attempt[:]) < 0
		}
	}
	return l, nil
}

// drop deletes rows of claim id that no longer hold, even if the client
// left; a failure leaves them to the next claim of the address.
func (h *Handler) drop(ctx context.Context, id uuid.UUID, rows ...store.ClaimRow) {
	if len(rows) == 0 {
		return
	}
	if err := h.claims.Drop(context.WithoutCancel(ctx), id, rows...); err != nil {
		h.log.Warn("dropping claims that no longer hold failed; the next claim of the address drops them", zap.Stringer("claim", id), zap.Error(err))
	}
}

// addressesOf returns every address customer's events gave it, readable
// while it is not erased.
func (h *Handler) addressesOf(ctx context.Context, customer uuid.UUID) ([]string, error) {
	events, err := h.store.Load(ctx, customer, 0)
	if err != nil {
		return nil, fmt.Errorf("aggregate: load %s: %w", customer, err)
	}
	var out []string
	for _, e := range events {
		ev, err := Decode(e)
		if err != nil {
			return nil, err
		}
		if email := takenEmail([]Event{ev}); email != "" && email != pii.Erased {
			out = append(out, email)
		}
	}
	return out, nil
}

// dropClaimsOf drops customer's rows under the keys of addresses, best
// effort: an erased customer's rows hold nothing, and the next claim of
// an address drops what is left.
func (h *Handler) dropClaimsOf(ctx context.Context, customer uuid.UUID, addresses []string) {
	if h.claims == nil {
		return
	}
	ids := make(map[uuid.UUID]bool)
	for _, a := range addresses {
		ids[h.claimID(emailKey(a))] = true
	}
	for id := range ids {
		rows, err := h.claims.Rows(context.WithoutCancel(ctx), id)
		if err != nil {
			h.log.Warn("reading an erased customer's claims failed; the next claim of the address drops them", zap.Stringer("claim", id), zap.Error(err))
			continue
		}
		h.drop(ctx, id, slices.DeleteFunc(rows, func(r store.ClaimRow) bool { return r.Customer != customer })...)
	}
}

// streamClaim refuses email while a claim stream of an earlier build holds
// it for another customer: the stream under id (a keyed hash), or, when
// that has no events and claims are hashed, the one under a UUIDv5 of the
// address (before claims were keyed by a hash). They are never written.
func (h *Handler) streamClaim(ctx context.Context, id uuid.UUID, key string, customer uuid.UUID, now time.Time) error {
	c, v, err := load[EmailClaim](ctx, h.store, EmailClaimType, id)
	if err != nil {
		return err
	}
	if v == 0 && h.hashedClaims {
		if c, _, err = load[EmailClaim](ctx, h.store, EmailClaimType, claimID(key)); err != nil {
			return err
		}
	}
	if c.ID == uuid.Nil || c.Holder == uuid.Nil || c.Holder == customer {
		return nil // no claim stream (or another aggregate's id), or customer's own
	}
	holder, _, err := load[Customer](ctx, h.store, CustomerType, c.Holder)
	if err != nil {
		return err
	}
	if c.holding(holder, h.claimTTL, now) != stale {
		return emailTaken()
	}
	return nil
}
