// Package transfer moves an event log from one store to another through a
// portable stream: Export writes every event of a store.Log as NDJSON, and
// Import appends such a stream to a store.Store, resumably, keeping every
// event's id, sequence, timestamp, metadata and payload bytes. It is what
// `orderd export` and `orderd import` run to move an embedded (SQLite)
// deployment to a CQL cluster.
//
// The stream is one JSON object per line. The first line is the Header
// and the last the Trailer; between them come the events, one Line each,
// then the data keys, one KeyLine each, then the e-mail address claims,
// one ClaimLine each. Within the stream each aggregate's events come in
// sequence order, without gaps; aggregates interleave in whatever order
// the source's Replay reads them.
package transfer

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// Format names the stream in its header, and FormatVersion is the version
// of this layout: an importer refuses a stream of a version it does not
// know.
//
// Version 2 added the key lines (KeyLine): the data keys of personal data,
// wrapped as the source keeps them. Version 3 added the claim lines
// (ClaimLine): the rows of store.EmailClaims. An importer reads versions
// 1, 2 and 3.
const (
	Format        = "orderd-events"
	FormatVersion = 3
)

// Header is the first line of a stream.
type Header struct {
	Format  string    `json:"format"`  // always Format
	Version int       `json:"version"` // FormatVersion
	Created time.Time `json:"created"` // when the export started
	// Events is how many events the source said it held when the export
	// started (exact on SQLite, a count of versions on CQL): a size for
	// the importer's progress, not a check.
	Events int64 `json:"events"`
}

// Trailer is the last line of a complete stream: an import that meets
// the end of its input without one knows the stream was cut short.
type Trailer struct {
	End    bool  `json:"end"`              // always true
	Events int64 `json:"events"`           // the event lines of the stream
	Keys   int64 `json:"keys,omitempty"`   // the key lines of the stream
	Claims int64 `json:"claims,omitempty"` // the claim lines of the stream
}

// KeyLine is one data key of a stream, after the events: a subject's key
// as the source keeps it, wrapped by the source's key-encryption key (the
// stream holds no key in plaintext; the target needs that KEK to read the
// personal fields). Erased keys are not exported: a subject without a key
// reads as erased.
type KeyLine struct {
	Key WrappedKey `json:"key"`
}

// WrappedKey is store.WrappedKey in the stream.
type WrappedKey struct {
	Subject uuid.UUID `json:"subject"`
	KEK     string    `json:"kek"`
	Wrapped []byte    `json:"wrapped"` // standard base64
	Created time.Time `json:"created"`
}

// ClaimLine is one row of the source's e-mail address claims, after the
// keys: the row under its address's key, as store.EmailClaims keeps it
// (the key is a keyed hash, so the address is not in it). Without its
// row on the target, a customer's live address could be taken by
// another customer after the move.
type ClaimLine struct {
	Claim ClaimRow `json:"claim"`
}

// ClaimRow is a key and its store.ClaimRow in the stream.
type ClaimRow struct {
	Key      uuid.UUID `json:"key"`
	Attempt  uuid.UUID `json:"attempt"`
	Customer uuid.UUID `json:"customer"`
	Since    int64     `json:"since"`
	At       time.Time `json:"at"` // UTC
}

// keyPrefix starts a KeyLine's line, and no Line's.
var keyPrefix = []byte(`{"key":`)

// claimPrefix starts a ClaimLine's line, and no Line's.
var claimPrefix = []byte(`{"claim":`)

// trailerPrefix starts a Trailer's line, and no Line's.
var trailerPrefix = []byte(`{"end":`)

// Line is one event of a stream: every field the store keeps. The payload
// is in Data, verbatim, when its stored bytes are compact JSON (what
// orderd writes); otherwise in DataBase64, so that the bytes survive
// exactly whatever whitespace they hold.
type Line struct {
	ID            uuid.UUID         `json:"id"`
	AggregateID   uuid.UUID         `json:"aggregate_id"`
	AggregateType string            `json:"aggregate_type"`
	Sequence      int64             `json:"sequence"`
	Type          string            `json:"type"`
	SchemaVersion int               `json:"schema_version"`
	CausationID   uuid.UUID         `json:"causation_id"`
	CorrelationID uuid.UUID         `json:"correlation_id"`
	Timestamp     time.Time         `json:"timestamp"` // RFC 3339 with nanoseconds, UTC
	Metadata      map[string]string `json:"metadata,omitempty"`
	Data          json.RawMessage   `json:"data,omitempty"`
	DataBase64    string            `json:"data_b64,omitempty"`
}

// lineOf turns a stored event into its line.
func lineOf(e store.Event) Line {
	l := Line{
		ID: e.ID, AggregateID: e.AggregateID, AggregateType: e.AggregateType, Sequence: e.Sequence,
		Type: e.Type, SchemaVersion: e.SchemaVersion, CausationID: e.CausationID, CorrelationID: e.CorrelationID,
		Timestamp: e.Timestamp.UTC(), Metadata: e.Metadata,
	}
	var c bytes.Buffer
	if json.Compact(&c, e.Data) == nil && bytes.Equal(c.Bytes(), e.Data) && len(e.Data) > 0 {
		l.Data = e.Data // encoding/json compacts a RawMessage: compact bytes pass unchanged
	} else {
		l.DataBase64 = base64.StdEncoding.EncodeToString(e.Data)
	}
	return l
}

// event turns a line back into the event it was exported from.
func (l Line) event() (store.Event, error) {
	e := store.Event{
		ID: l.ID, AggregateID: l.AggregateID, AggregateType: l.AggregateType, Sequence: l.Sequence,
		Type: l.Type, SchemaVersion: l.SchemaVersion, CausationID: l.CausationID, CorrelationID: l.CorrelationID,
		Timestamp: l.Timestamp.UTC(), Metadata: l.Metadata,
	}
	switch {
	case l.Data != nil && l.DataBase64 != "":
		return e, errors.New("both data and data_b64")
	case l.Data != nil:
		e.Data = l.Data
	default:
		b, err := base64.StdEncoding.DecodeString(l.DataBase64)
		if err != nil {
			return e, fmt.Errorf("data_b64: %w", err)
		}
		e.Data = b
	}
	if e.ID == uuid.Nil || e.AggregateID == uuid.Nil || e.Sequence < 1 {
		return e, errors.New("missing id, aggregate_id or sequence")
	}
	return e, nil
}
