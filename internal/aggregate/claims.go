package aggregate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// Unique addresses are kept by one EmailClaim stream per address (its id
// derived from the address's key), written in two steps around the
// customer's own write, since the store has no transaction across streams:
//
//  1. claim the address: append EmailClaimed at the claim stream's version,
//     refused ("email_taken") while another customer holds it;
//  2. append the customer's event that takes the address.
//
// The address a change leaves is not released by a write of its own: its
// claim is stale once its customer moved past it (EmailClaim.heldBy), and
// the next customer to claim it takes it over, so a release would cost
// every change of address a Paxos round on CQL that correctness does not
// need. (Claims written by earlier builds may end in EmailReleased.)
//
// Racing claims of one address meet at one stream version: the store lets
// one append, and the others read the winner's claim and are refused,
// never retried into a second winner. A crash between the steps leaves a
// claim whose holder does not have the address; it is taken over once
// stale (see EmailClaim.heldBy), or at once by the same customer.

// customer runs a customer command through handle, claiming the address a
// decision gives the customer before appending it.
//
// A registration under a minted id (Meta.Minted) has no events to look for
// and mints its customer's data key (Keys.Mint, no Paxos round on CQL)
// once its decision stands, before the claim, whose event the key seals.
// An address found taken then leaves a key that seals nothing.
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
		if err := h.claim(ctx, email, id, v, meta, now); err != nil {
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

// claim reserves email for customer, at its version. A conflict means
// another claim landed first: it is read and decided on again, so that a
// live one refuses this one.
func (h *Handler) claim(ctx context.Context, email string, customer uuid.UUID, version int64, meta Meta, now time.Time) error {
	id := h.claimID(emailKey(email))
	for range h.retries + 1 {
		c, v, err := load[EmailClaim](ctx, h.store, EmailClaimType, id)
		if err != nil {
			return err
		}
		var holder *Customer
		if c.Holder != uuid.Nil && c.Holder != customer {
			if holder, _, err = load[Customer](ctx, h.store, CustomerType, c.Holder); err != nil {
				return err
			}
		}
		if v == 0 && h.hashedClaims {
			if err := h.legacyClaim(ctx, email, customer, now); err != nil {
				return err
			}
		}
		evs, err := c.Claim(email, customer, version, holder, h.claimTTL, now)
		if err != nil {
			return err
		}
		if err := h.appendClaim(ctx, id, v, evs, meta, now); !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	return &Error{Kind: ErrRejected, Code: "concurrent_modification",
		Detail: fmt.Sprintf("the claim of the address kept changing under %d attempts; retry the command", h.retries+1)}
}

// legacyClaim refuses email while a claim of an earlier build (a UUIDv5
// of the address, before claims were keyed by a hash) holds it for another
// customer: the address of a customer registered before the upgrade stays
// its own, although its claim was not migrated. It is read only when the
// address has no hashed claim yet, and never written.
func (h *Handler) legacyClaim(ctx context.Context, email string, customer uuid.UUID, now time.Time) error {
	c, v, err := load[EmailClaim](ctx, h.store, EmailClaimType, claimID(emailKey(email)))
	if err != nil || v == 0 || c.Holder == uuid.Nil || c.Holder == customer {
		return err
	}
	holder, _, err := load[Customer](ctx, h.store, CustomerType, c.Holder)
	if err != nil {
		return err
	}
	if c.heldBy(holder, h.claimTTL, now) {
		return emailTaken()
	}
	return nil
}

// appendClaim appends a claim's events at v; none is no append.
func (h *Handler) appendClaim(ctx context.Context, id uuid.UUID, v int64, evs []Event, meta Meta, now time.Time) error {
	if len(evs) == 0 {
		return nil
	}
	envs, err := h.envelopes(EmailClaimType, id, v, evs, meta, now)
	if err != nil {
		return err
	}
	if err := h.store.Append(ctx, id, v, envs); err != nil {
		return fmt.Errorf("aggregate: claim %s: %w", id, err)
	}
	h.appended(EmailClaimType, len(envs))
	return nil
}
