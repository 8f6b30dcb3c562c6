// Package piidecrypt decrypts the personal fields of the records orderd
// publishes to Kafka, for an authorised consumer.
//
// A record whose event has personal fields (a customer's email,
// first_name, last_name and phone; an order's delivery signature) carries
// them encrypted ("pii1:…", AES-256-GCM) under the data key of the subject
// its ce_piisubject header names. Keys fetches that key from orderd's
// GET /v1/keys/{subject} (the admin token, or a token of scope keys:read or
// admin) and keeps it in memory; Decrypter.Record returns the record's
// value with the fields in plaintext. Once the subject is erased (a
// CustomerErased record; orderd destroyed the key) Record returns
// ErrErased: call Keys.Forget on CustomerErased.
//
//	keys := piidecrypt.NewKeys("https://orderd.example", token, nil)
//	dec := piidecrypt.New(keys)
//	value, err := dec.Record(ctx, header("ce_type"), header("ce_piisubject"), msg.Value)
package piidecrypt

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/pii"
)

// ErrErased: the subject was erased; its personal fields cannot be read
// any more, by anyone.
var ErrErased = errors.New("piidecrypt: subject erased")

// fields are the personal fields of each event type (ce_type), by JSON name.
var fields = map[string][]string{
	"CustomerRegistered":   {pii.FieldEmail, pii.FieldFirstName, pii.FieldLastName, pii.FieldPhone},
	"CustomerEmailChanged": {pii.FieldEmail},
	"CustomerPhoneChanged": {pii.FieldPhone},
	"OrderDelivered":       {pii.FieldSignature},
}

// KeySource gives the raw data key of a subject, or ErrErased.
type KeySource interface {
	Key(ctx context.Context, subject uuid.UUID) ([]byte, error)
}

// Decrypter decrypts records' personal fields with keys of a KeySource.
type Decrypter struct{ keys KeySource }

// New returns a Decrypter that takes its keys from keys (usually *Keys).
func New(keys KeySource) *Decrypter { return &Decrypter{keys: keys} }

// Record returns value (a record's JSON payload) with its personal fields
// decrypted. ceType and subject are the record's ce_type and
// ce_piisubject headers; a record without ce_piisubject, or of an event
// type without personal fields, comes back unchanged. It returns ErrErased
// once the subject is erased.
func (d *Decrypter) Record(ctx context.Context, ceType, subject string, value []byte) ([]byte, error) {
	names := fields[ceType]
	if subject == "" || len(names) == 0 {
		return value, nil
	}
	id, err := uuid.Parse(subject)
	if err != nil {
		return nil, fmt.Errorf("piidecrypt: ce_piisubject %q: %w", subject, err)
	}
	raw, err := d.keys.Key(ctx, id)
	if err != nil {
		return nil, err
	}
	key, err := pii.NewDataKey(id, raw)
	if err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(value, &obj); err != nil {
		return nil, fmt.Errorf("piidecrypt: payload: %w", err)
	}
	for _, name := range names {
		var v string
		if raw, ok := obj[name]; !ok || json.Unmarshal(raw, &v) != nil || !pii.IsSealed(v) {
			continue
		}
		plain, err := key.Open(name, v)
		if err != nil {
			return nil, fmt.Errorf("piidecrypt: %s: %w", name, err)
		}
		if obj[name], err = json.Marshal(plain); err != nil {
			return nil, err
		}
	}
	return json.Marshal(obj)
}

// Keys fetches data keys from orderd's GET /v1/keys/{subject} and keeps
// them in memory (never on disk). It is safe for concurrent use.
type Keys struct {
	base, token string
	client      *http.Client

	mu    sync.Mutex
	cache map[uuid.UUID][]byte // nil value: erased
}

// NewKeys returns the key source of the orderd at base (such as
// "https://orderd.example"), asking with the bearer token; a nil client
// is http.DefaultClient.
func NewKeys(base, token string, client *http.Client) *Keys {
	if client == nil {
		client = http.DefaultClient
	}
	return &Keys{base: strings.TrimSuffix(base, "/"), token: token, client: client, cache: map[uuid.UUID][]byte{}}
}

// Key returns the subject's raw data key: ErrErased once orderd answers
// 410 subject_erased.
func (k *Keys) Key(ctx context.Context, subject uuid.UUID) ([]byte, error) {
	k.mu.Lock()
	raw, ok := k.cache[subject]
	k.mu.Unlock()
	if ok {
		if raw == nil {
			return nil, ErrErased
		}
		return raw, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.base+"/v1/keys/"+url.PathEscape(subject.String()), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+k.token)
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("piidecrypt: key of %s: %w", subject, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusGone:
		k.put(subject, nil)
		return nil, ErrErased
	default:
		return nil, fmt.Errorf("piidecrypt: key of %s: orderd answered %s", subject, resp.Status)
	}
	var body struct {
		Key string `json:"key"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("piidecrypt: key of %s: %w", subject, err)
	}
	if raw, err = base64.StdEncoding.DecodeString(body.Key); err != nil {
		return nil, fmt.Errorf("piidecrypt: key of %s: %w", subject, err)
	}
	k.put(subject, raw)
	return raw, nil
}

func (k *Keys) put(subject uuid.UUID, raw []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.cache[subject] = raw
}

// Forget marks the subject erased here at once: call it on the subject's
// CustomerErased record, so that no cached key outlives the erasure.
func (k *Keys) Forget(subject uuid.UUID) { k.put(subject, nil) }
