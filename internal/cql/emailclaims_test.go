package cql

import (
	"testing"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/storetest"
)

func TestEmailClaimsConformance(t *testing.T) {
	storetest.RunEmailClaims(t, func(t *testing.T) (store.EmailClaims, func() error) {
		s := mustOpen(t, testConfig(t), nil)
		return s.EmailClaims(), s.Close
	})
}

// TestEmailClaimsDropOutranksRetry: a drop wins over a late retry of the
// row's write by the driver.
func TestEmailClaimsDropOutranksRetry(t *testing.T) {
	s := mustOpen(t, testConfig(t), nil)
	storetest.ClaimDropOutranksRetry(t, s.EmailClaims())
}

// TestEmailClaimsConsistency: a claim's quorum is that of the serial
// consistency's scope, the one the appends' lightweight transactions are
// linearisable in, whatever Config.Consistency says.
func TestEmailClaimsConsistency(t *testing.T) {
	for _, tc := range []struct {
		serial, want gocql.Consistency
	}{
		{gocql.Serial, gocql.Quorum},
		{gocql.LocalSerial, gocql.LocalQuorum},
	} {
		c := &EmailClaims{s: &Store{cfg: Config{Consistency: gocql.One, SerialConsistency: tc.serial}}}
		if got := c.claimConsistency(); got != tc.want {
			t.Errorf("under %v: %v, want %v", tc.serial, got, tc.want)
		}
	}
}

// TestEmailClaimsNoPaxos: a claim, a drop and a scan run no lightweight
// transaction and no SERIAL read, which is the point of claim rows (the
// rounds of a command are held in cmd/orderd's TestPaxosRounds).
func TestEmailClaimsNoPaxos(t *testing.T) {
	counter := NewRounds()
	s := openWith(t, testConfig(t), Options{NoHints: true, NoHandOff: true, NoSweep: true, Observer: counter})
	claims, ctx, key := s.EmailClaims(), t.Context(), uuid.New()
	counter.Take()
	row := store.ClaimRow{Attempt: uuid.New(), Customer: uuid.New(), Since: 1, At: time.Now()}
	if _, err := claims.Claim(ctx, key, row); err != nil {
		t.Fatal(err)
	}
	if err := claims.Drop(ctx, key, row); err != nil {
		t.Fatal(err)
	}
	if err := claims.Scan(ctx, func(uuid.UUID, store.ClaimRow) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if lwt, serial := counter.Take(); len(lwt) > 0 || len(serial) > 0 {
		t.Errorf("claims ran Paxos rounds: LWTs %v, SERIAL reads %v", lwt, serial)
	}
}
