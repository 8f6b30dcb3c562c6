package aggregate

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/orderd/orderd/internal/store"
)

// Upcasters returns the chain that brings every stored payload of this
// domain to the schema SchemaVersion names. Store backends are opened with
// it, so Decode only ever sees current payloads. Each call returns a new
// chain; register nothing on it once it is shared.
func Upcasters() *store.Upcasters {
	u := &store.Upcasters{}
	u.Register("OrderCreated", 1, upcastOrderCreatedV1)
	return u
}

// upcastOrderCreatedV1 turns an OrderCreated v1 payload, the seed tutorial's
// {"customer_id", "items"}, into v2 by adding "created_at". v1 carried no
// time of its own; the envelope's timestamp is when the command that created
// the order was decided, which is what created_at means in v2.
//
// Fields it does not know are kept, so that nothing a v1 writer stored is
// lost on read. It returns an error for a payload that is not a JSON object,
// or that would not decode as OrderCreated: that is found here, by the step
// that knows the payload is v1, rather than later by Decode.
func upcastOrderCreatedV1(e store.Event) (json.RawMessage, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(e.Data, &fields); err != nil {
		return nil, fmt.Errorf("OrderCreated v1 payload is not a JSON object: %w", err)
	}
	if fields == nil { // null unmarshals into a nil map without complaint
		return nil, errors.New("OrderCreated v1 payload is null, not a JSON object")
	}
	// encoding/json matches keys to fields case-insensitively, so a stray
	// "Created_At" could otherwise decode over the time added here.
	for k := range fields {
		if strings.EqualFold(k, "created_at") {
			delete(fields, k)
		}
	}
	at, err := json.Marshal(e.Timestamp.UTC())
	if err != nil {
		return nil, fmt.Errorf("OrderCreated v1 timestamp: %w", err)
	}
	fields["created_at"] = at
	data, err := json.Marshal(fields)
	if err != nil {
		return nil, fmt.Errorf("OrderCreated v1 payload: %w", err)
	}
	var v2 OrderCreated
	if err := json.Unmarshal(data, &v2); err != nil {
		return nil, fmt.Errorf("OrderCreated v1 payload does not decode: %w", err)
	}
	return data, nil
}
