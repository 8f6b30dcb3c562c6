package piidecrypt_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/pii"
	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/pkg/piidecrypt"
)

// ringKeys hands out the keys of a real keyring, as GET /v1/keys/{subject}
// does (TestErasure in cmd/orderd goes through the endpoint itself).
type ringKeys struct{ ring *pii.Keyring }

func (k ringKeys) Key(ctx context.Context, subject uuid.UUID) ([]byte, error) {
	dk, err := k.ring.Existing(ctx, subject)
	if errors.Is(err, pii.ErrErased) {
		return nil, piidecrypt.ErrErased
	}
	if err != nil {
		return nil, err
	}
	return dk.Raw(), nil
}

// TestRecord: a record sealed as orderd stores it decrypts to the plain
// payload, other fields untouched; a record without ce_piisubject passes
// as it is; once the subject is erased the record is ErrErased.
func TestRecord(t *testing.T) {
	ctx := t.Context()
	keys, err := sqlite.OpenDataKeys(ctx, filepath.Join(t.TempDir(), "datakeys.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer keys.Close()
	kek, _ := pii.NewLocalKEK(bytes.Repeat([]byte{5}, pii.KEKSize))
	ring := pii.NewKeyring(keys, kek, pii.Options{})
	customer := uuid.New()
	plain := aggregate.CustomerRegistered{Email: "ada@example.com", FirstName: "Ada", LastName: "Lovelace", Phone: "+441234567890",
		RegisteredAt: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)}
	data, _ := json.Marshal(plain)
	e, err := aggregate.SealEvent(ctx, ring, customer, store.Event{ID: uuid.New(), AggregateID: customer,
		AggregateType: aggregate.CustomerType, Type: "CustomerRegistered", Data: data})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(e.Data, []byte("Lovelace")) {
		t.Fatalf("not sealed: %s", e.Data)
	}
	dec := piidecrypt.New(ringKeys{ring})
	got, err := dec.Record(ctx, "CustomerRegistered", e.Metadata[aggregate.MetaSubject], e.Data)
	if err != nil {
		t.Fatal(err)
	}
	var back aggregate.CustomerRegistered
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	if back != plain {
		t.Errorf("decrypted %+v, want %+v", back, plain)
	}
	if got, err := dec.Record(ctx, "CustomerRegistered", "", data); err != nil || !bytes.Equal(got, data) {
		t.Errorf("a record without ce_piisubject: %s, %v", got, err)
	}
	if err := ring.Erase(ctx, customer, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := dec.Record(ctx, "CustomerRegistered", customer.String(), e.Data); !errors.Is(err, piidecrypt.ErrErased) {
		t.Errorf("after the erasure: %v, want ErrErased", err)
	}
}
