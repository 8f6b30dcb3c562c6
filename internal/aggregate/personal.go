package aggregate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/pii"
	"github.com/orderd/orderd/internal/store"
)

// Personal data is encrypted at append with a data key of its subject (a
// customer; an order's personal field uses its customer's key), field by
// field: the events' JSON keeps its field names and shapes, the values of
// the personal fields become pii ciphertexts ("pii1:…"), and the envelope's
// metadata names the subject (MetaSubject), whose id is the key's. Reads
// decrypt them; once the subject is erased (its key destroyed) they read
// as pii.Erased. See internal/pii and docs/events.md.

// MetaSubject is the envelope metadata entry naming the subject whose data
// key encrypted the event's personal fields: the key id a consumer of the
// records asks GET /v1/keys/{subject} for.
const MetaSubject = "pii_subject"

// Keys are the subjects' data keys, as the aggregates use them.
type Keys interface {
	// For returns the subject's key, creating it on first use;
	// pii.ErrErased once erased.
	For(ctx context.Context, subject uuid.UUID) (*pii.DataKey, error)
	// ForNew is For for a subject that is most likely new: it creates
	// the key without reading first (a registration saves a read).
	ForNew(ctx context.Context, subject uuid.UUID) (*pii.DataKey, error)
	// Mint creates the key of a subject no one else can name yet (an id
	// just minted): cheaper than ForNew where the store can make it so.
	Mint(ctx context.Context, subject uuid.UUID) (*pii.DataKey, error)
	// Existing returns the subject's key without creating one:
	// pii.ErrErased once erased, store.ErrKeyNotFound when it has none.
	Existing(ctx context.Context, subject uuid.UUID) (*pii.DataKey, error)
	// Erase destroys the subject's key.
	Erase(ctx context.Context, subject uuid.UUID, at time.Time) error
}

// personalFields are the personal fields of each event type, by their JSON
// names (which are also their ciphertexts' field context).
var personalFields = map[string][]string{
	"CustomerRegistered":   {pii.FieldEmail, pii.FieldFirstName, pii.FieldLastName, pii.FieldPhone},
	"CustomerEmailChanged": {pii.FieldEmail},
	"CustomerPhoneChanged": {pii.FieldPhone},
	"EmailClaimed":         {pii.FieldEmail},
	"EmailReleased":        {pii.FieldEmail},
	"OrderDelivered":       {pii.FieldSignature},
}

// PersonalFields returns the JSON names of eventType's personal fields;
// none for an event type without personal data.
func PersonalFields(eventType string) []string { return personalFields[eventType] }

// Sealed returns st with personal data encrypted at Append and decrypted
// at Load and LoadPage: what the command handler, time travel and the
// history read. The events handed to Append are not changed (the handler
// applies them to its snapshot state as they are).
func Sealed(st store.Store, keys Keys) store.Store {
	return &sealedStore{Store: st, keys: keys}
}

type sealedStore struct {
	store.Store
	keys Keys
}

// Append seals each event's personal fields with its subject's key. An
// event whose subject is erased keeps none of them (an order delivered
// after its customer's erasure is stored without its signature).
func (s *sealedStore) Append(ctx context.Context, id uuid.UUID, expected int64, events []store.Event) error {
	sealed, err := s.seal(ctx, events, expected == 0)
	if err != nil {
		return err
	}
	return s.Store.Append(ctx, id, expected, sealed)
}

// Mint seals as Append does.
func (s *sealedStore) Mint(ctx context.Context, id uuid.UUID, events []store.Event) error {
	sealed, err := s.seal(ctx, events, true)
	if err != nil {
		return err
	}
	return s.Store.Mint(ctx, id, sealed)
}

// seal returns events with their personal fields sealed, events itself
// when none has any. fresh: they start a stream.
func (s *sealedStore) seal(ctx context.Context, events []store.Event, fresh bool) ([]store.Event, error) {
	var sealed []store.Event
	for i, e := range events {
		fields := personalFields[e.Type]
		if len(fields) == 0 {
			continue
		}
		if sealed == nil {
			sealed = append([]store.Event(nil), events...)
		}
		subject, err := s.subject(ctx, e)
		if err != nil {
			return nil, err
		}
		// A new stream's subject is most likely new too: a registration
		// (its claim's stream, then the customer's) makes its key.
		if sealed[i], err = sealEvent(ctx, s.keys, subject, e, fresh); err != nil {
			return nil, err
		}
	}
	if sealed == nil {
		return events, nil
	}
	return sealed, nil
}

// subject returns whose key seals e: the customer's own, the claimant's
// for a claim's events, the order's customer for an order's (read from
// the order's first event, OrderCreated).
func (s *sealedStore) subject(ctx context.Context, e store.Event) (uuid.UUID, error) {
	switch e.AggregateType {
	case CustomerType:
		return e.AggregateID, nil
	case EmailClaimType:
		var c struct {
			CustomerID uuid.UUID `json:"customer_id"`
		}
		if err := json.Unmarshal(e.Data, &c); err != nil {
			return uuid.Nil, fmt.Errorf("aggregate: subject of %s: %w", e.Type, err)
		}
		return c.CustomerID, nil
	case OrderType:
		first, err := s.Store.LoadPage(ctx, e.AggregateID, 0, 1)
		if err != nil {
			return uuid.Nil, fmt.Errorf("aggregate: customer of order %s: %w", e.AggregateID, err)
		}
		if len(first) == 0 {
			return uuid.Nil, fmt.Errorf("aggregate: order %s has no events", e.AggregateID)
		}
		var o struct {
			CustomerID uuid.UUID `json:"customer_id"`
		}
		if err := json.Unmarshal(first[0].Data, &o); err != nil {
			return uuid.Nil, fmt.Errorf("aggregate: customer of order %s: %w", e.AggregateID, err)
		}
		return o.CustomerID, nil
	}
	return uuid.Nil, fmt.Errorf("aggregate: %s of %s has personal fields but no subject", e.Type, e.AggregateType)
}

// Load decrypts the events' personal fields.
func (s *sealedStore) Load(ctx context.Context, id uuid.UUID, after int64) ([]store.Event, error) {
	evs, err := s.Store.Load(ctx, id, after)
	if err != nil {
		return nil, err
	}
	return OpenEvents(ctx, s.keys, evs)
}

// LoadPage decrypts the events' personal fields.
func (s *sealedStore) LoadPage(ctx context.Context, id uuid.UUID, after int64, limit int) ([]store.Event, error) {
	evs, err := s.Store.LoadPage(ctx, id, after, limit)
	if err != nil {
		return nil, err
	}
	return OpenEvents(ctx, s.keys, evs)
}

// SealEvent returns e with its personal fields encrypted by subject's key
// and MetaSubject in a copy of its metadata. A subject already erased
// gets its fields emptied instead.
func SealEvent(ctx context.Context, keys Keys, subject uuid.UUID, e store.Event) (store.Event, error) {
	return sealEvent(ctx, keys, subject, e, false)
}

// sealEvent is SealEvent, getting the key with Keys.ForNew when fresh.
func sealEvent(ctx context.Context, keys Keys, subject uuid.UUID, e store.Event, fresh bool) (store.Event, error) {
	fields := personalFields[e.Type]
	if len(fields) == 0 {
		return e, nil
	}
	get := keys.For
	if fresh {
		get = keys.ForNew
	}
	key, err := get(ctx, subject)
	erased := errors.Is(err, pii.ErrErased)
	if err != nil && !erased {
		return e, fmt.Errorf("aggregate: key of %s: %w", subject, err)
	}
	data, err := mapFields(e.Data, fields, func(field, v string) (string, error) {
		if erased {
			return "", nil
		}
		return key.Seal(field, v), nil
	})
	if err != nil {
		return e, fmt.Errorf("aggregate: seal %s %s: %w", e.Type, e.ID, err)
	}
	md := make(map[string]string, len(e.Metadata)+1)
	for k, v := range e.Metadata {
		md[k] = v
	}
	md[MetaSubject] = subject.String()
	e.Data, e.Metadata = data, md
	return e, nil
}

// OpenEvents decrypts the personal fields of evs (see OpenEvent), in a new
// slice when any has some.
func OpenEvents(ctx context.Context, keys Keys, evs []store.Event) ([]store.Event, error) {
	var out []store.Event
	for i, e := range evs {
		if e.Metadata[MetaSubject] == "" {
			continue
		}
		if out == nil {
			out = append([]store.Event(nil), evs...)
		}
		var err error
		if out[i], err = OpenEvent(ctx, keys, e); err != nil {
			return nil, err
		}
	}
	if out == nil {
		return evs, nil
	}
	return out, nil
}

// OpenEvent returns e with its personal fields decrypted, or pii.Erased
// where they were once the subject's key is destroyed. An event without
// MetaSubject (written before encryption) comes back as it is.
func OpenEvent(ctx context.Context, keys Keys, e store.Event) (store.Event, error) {
	fields := personalFields[e.Type]
	sub := e.Metadata[MetaSubject]
	if len(fields) == 0 || sub == "" {
		return e, nil
	}
	subject, err := uuid.Parse(sub)
	if err != nil {
		return e, fmt.Errorf("aggregate: event %s: bad %s %q", e.ID, MetaSubject, sub)
	}
	key, err := keys.Existing(ctx, subject)
	erased := errors.Is(err, pii.ErrErased) || errors.Is(err, store.ErrKeyNotFound)
	if err != nil && !erased {
		return e, fmt.Errorf("aggregate: key of %s: %w", subject, err)
	}
	e.Data, err = mapFields(e.Data, fields, func(field, v string) (string, error) {
		if erased {
			if pii.IsSealed(v) {
				return pii.Erased, nil
			}
			return v, nil
		}
		return key.Open(field, v)
	})
	if err != nil {
		return e, fmt.Errorf("aggregate: open %s %s: %w", e.Type, e.ID, err)
	}
	return e, nil
}

// mapFields returns data (a JSON object) with the string values of fields
// replaced by f's answer; an absent or empty field is left out of f.
func mapFields(data json.RawMessage, fields []string, f func(field, v string) (string, error)) (json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, err
	}
	for _, field := range fields {
		raw, ok := obj[field]
		if !ok {
			continue
		}
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		if v == "" {
			continue
		}
		nv, err := f(field, v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		if obj[field], err = json.Marshal(nv); err != nil {
			return nil, err
		}
	}
	return json.Marshal(obj)
}

// stateFields are the personal fields of the aggregates' snapshot states
// (their Go field names) and the field context of each one's ciphertext.
var stateFields = map[string]map[string]string{
	CustomerType: {"Email": pii.FieldEmail, "FirstName": pii.FieldFirstName, "LastName": pii.FieldLastName, "Phone": pii.FieldPhone},
	OrderType:    {"Signature": pii.FieldSignature},
}

// stateSubject returns whose key seals the snapshot state of aggregate id:
// a customer's own, an order's customer (its CustomerID).
func stateSubject(aggType string, id uuid.UUID, state []byte) (uuid.UUID, error) {
	if aggType != OrderType {
		return id, nil
	}
	var o struct{ CustomerID uuid.UUID }
	if err := json.Unmarshal(state, &o); err != nil {
		return uuid.Nil, err
	}
	return o.CustomerID, nil
}

// sealState encrypts the personal fields of a snapshot state before it is
// saved; an erased subject's are emptied.
func sealState(ctx context.Context, keys Keys, aggType string, id uuid.UUID, state []byte) ([]byte, error) {
	fields := stateFields[aggType]
	if len(fields) == 0 {
		return state, nil
	}
	subject, err := stateSubject(aggType, id, state)
	if err != nil {
		return nil, err
	}
	key, err := keys.For(ctx, subject)
	erased := errors.Is(err, pii.ErrErased)
	if err != nil && !erased {
		return nil, err
	}
	return mapFields(state, keysOf(fields), func(name, v string) (string, error) {
		if erased || v == pii.Erased {
			return pii.Erased, nil
		}
		return key.Seal(fields[name], v), nil
	})
}

// openState decrypts the personal fields of a snapshot state read back;
// an erased subject's read pii.Erased.
func openState(ctx context.Context, keys Keys, aggType string, id uuid.UUID, state []byte) ([]byte, error) {
	fields := stateFields[aggType]
	if len(fields) == 0 {
		return state, nil
	}
	subject, err := stateSubject(aggType, id, state)
	if err != nil {
		return nil, err
	}
	key, err := keys.Existing(ctx, subject)
	erased := errors.Is(err, pii.ErrErased) || errors.Is(err, store.ErrKeyNotFound)
	if err != nil && !erased {
		return nil, err
	}
	return mapFields(state, keysOf(fields), func(name, v string) (string, error) {
		if !pii.IsSealed(v) {
			return v, nil
		}
		if erased {
			return pii.Erased, nil
		}
		return key.Open(fields[name], v)
	})
}

func keysOf(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// WithPersonalData has the handler encrypt personal fields at append and
// decrypt them at load with keys (see Sealed), seal them in the snapshots
// it saves, and find e-mail claims by claimID, the keyed hash of an
// address's key (pii.Hasher.ID), instead of a UUIDv5 of the address. The
// default keeps them in plaintext (tests, and deployments that need no
// erasure).
func WithPersonalData(keys Keys, claimID func(key string) uuid.UUID) Option {
	return func(h *Handler) {
		h.keys, h.snaps.keys = keys, keys
		h.store = Sealed(h.store, keys)
		if claimID != nil {
			h.claimID, h.hashedClaims = claimID, true
		}
	}
}

// EraseCustomer erases customer id's personal data: it appends
// CustomerErased (none when the customer is erased already), drops the
// customer's claim rows of every address it had (they tie an address's
// keyed hash to the customer), then destroys the customer's data key. It returns the customer's version. A failure
// to destroy the key is returned (the command may be retried: it destroys
// the key again). Without keys (WithPersonalData) the event is all.
func (h *Handler) EraseCustomer(ctx context.Context, id uuid.UUID, meta Meta) (int64, error) {
	// The addresses are read before the erasure, which makes them
	// unreadable.
	addresses, err := h.addressesOf(ctx, id)
	if err != nil {
		return 0, err
	}
	v, err := handle[Customer](ctx, h, CustomerType, id, meta, false, func(c *Customer, now time.Time) ([]Event, error) {
		return c.Erase(now)
	}, nil)
	if err != nil {
		return v, err
	}
	h.dropClaimsOf(ctx, id, addresses)
	if h.keys == nil {
		return v, nil
	}
	// The erasure is committed: destroy the key even if the client left.
	if err := h.keys.Erase(context.WithoutCancel(ctx), id, h.now()); err != nil {
		return v, fmt.Errorf("aggregate: destroy the key of customer %s: %w", id, err)
	}
	return v, nil
}
