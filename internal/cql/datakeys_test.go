package cql

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/storetest"
)

func TestDataKeysConformance(t *testing.T) {
	storetest.RunDataKeys(t, func(t *testing.T) store.DataKeys {
		return mustOpen(t, testConfig(t), nil).DataKeys()
	})
}

// TestEraseOutranksLaterWrites: an erasure is one plain write, so a Rewrap
// (or Create) whose Paxos read ran before it may commit after it; Paxos
// stamps that write with the coordinator's clock, which may be ahead of
// this one. Played here by a write an hour ahead of the erasure, the
// erasure still wins on every cell it wrote: the key's bytes stay gone.
func TestEraseOutranksLaterWrites(t *testing.T) {
	s := mustOpen(t, testConfig(t), nil)
	keys := s.DataKeys()
	ctx := context.Background()
	subject := uuid.New()
	if _, err := keys.Create(ctx, store.WrappedKey{Subject: subject, KEK: "kek-1", Wrapped: []byte("secret"), Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := keys.Erase(ctx, subject, time.Now()); err != nil {
		t.Fatal(err)
	}
	late := time.Now().Add(time.Hour).UnixMicro()
	if err := s.sess.Session.Query(`UPDATE data_keys USING TIMESTAMP ? SET kek = 'kek-2', wrapped = 0x0102 WHERE subject = ?`,
		late, gocqlUUID(subject)).Exec(); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Get(ctx, subject); !errors.Is(err, store.ErrKeyErased) {
		t.Fatalf("Get = %v, want ErrKeyErased", err)
	}
	var kek *string
	var wrapped []byte
	if err := s.sess.Session.Query(`SELECT kek, wrapped FROM data_keys WHERE subject = ?`, gocqlUUID(subject)).Scan(&kek, &wrapped); err != nil {
		t.Fatal(err)
	}
	if kek != nil || wrapped != nil {
		t.Fatalf("after the erasure and a later write: kek %v, wrapped %x; want both null", kek, wrapped)
	}
}
