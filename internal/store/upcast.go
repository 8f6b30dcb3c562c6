package store

import (
	"encoding/json"
	"fmt"
)

// UpcastFunc turns the payload of e, stored at schema version v, into the
// payload of version v+1. It may read the rest of the envelope (for example
// its timestamp) but must not change it.
type UpcastFunc func(e Event) (json.RawMessage, error)

type upcastKey struct {
	eventType string
	from      int
}

// Upcasters is a chain of upcasters registered per event type and source
// schema version. Its zero value has none and upcasts nothing. Register all
// steps before the chain is shared; Upcast is then safe for concurrent use.
type Upcasters struct {
	steps map[upcastKey]UpcastFunc
}

// Register adds the step that turns eventType's payload from schema version
// from into from+1. It panics if that step is already registered, since two
// steps for one version are a programming error.
func (u *Upcasters) Register(eventType string, from int, fn UpcastFunc) {
	if u.steps == nil {
		u.steps = make(map[upcastKey]UpcastFunc)
	}
	k := upcastKey{eventType, from}
	if _, dup := u.steps[k]; dup {
		panic(fmt.Sprintf("store: upcaster for %s v%d registered twice", eventType, from))
	}
	u.steps[k] = fn
}

// Upcast applies the registered steps to e until none matches its type and
// schema version.
func (u *Upcasters) Upcast(e Event) (Event, error) {
	if u == nil {
		return e, nil
	}
	for {
		fn, ok := u.steps[upcastKey{e.Type, e.SchemaVersion}]
		if !ok {
			return e, nil
		}
		data, err := fn(e)
		if err != nil {
			return e, fmt.Errorf("store: upcast %s v%d of event %s: %w", e.Type, e.SchemaVersion, e.ID, err)
		}
		e.Data, e.SchemaVersion = data, e.SchemaVersion+1
	}
}
