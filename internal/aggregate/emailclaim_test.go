package aggregate

import (
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"
)

var (
	claimTTL  = time.Minute
	otherID   = uuid.MustParse("0190a000-0000-7000-8000-000000000003")
	claimedBy = func(holder uuid.UUID, since int64, at time.Time) EmailClaimed {
		return EmailClaimed{Email: "ann@example.com", CustomerID: holder, CustomerVersion: since, ClaimedAt: at}
	}
	claimedByOther = claimedBy(otherID, 0, now.Add(-time.Second)) // pending: other is registering
	releasedByOne  = EmailReleased{Email: "ann@example.com", CustomerID: customerID, ReleasedAt: t0}
)

// emailClaim returns a constructor of the claim that history leaves, as the
// handler would load it.
func emailClaim(history ...Event) func() *EmailClaim {
	return func() *EmailClaim {
		c := &EmailClaim{}
		for _, e := range history {
			c.apply(e)
		}
		c.replayed(claimID("ann@example.com"), int64(len(history)))
		return c
	}
}

// holderAt is the claim's holder, other, as the handler would load it: at
// version v with address email ("" for none).
func holderAt(v int64, email string) *Customer {
	return &Customer{ID: otherID, Version: v, Email: email}
}

// TestEmailClaimHolding: what a claim is to its address, given its holder
// as the handler loads it.
func TestEmailClaimHolding(t *testing.T) {
	longAgo := t0 // claimed long before now
	claim := func(since int64, at time.Time) EmailClaim {
		return EmailClaim{Email: "ann@example.com", Holder: otherID, Since: since, At: at}
	}
	tests := []struct {
		name   string
		claim  EmailClaim
		holder *Customer
		want   holding
	}{
		{"live", claim(0, longAgo), holderAt(1, "ann@example.com"), live},
		{"live in another case", claim(0, longAgo), holderAt(3, "Ann@example.com"), live},
		{"live after other changes", claim(0, longAgo), holderAt(5, "ann@example.com"), live},
		{"pending registration", claim(0, now.Add(-time.Second)), holderAt(0, ""), pending},
		{"pending change", claim(2, now.Add(-59*time.Second)), holderAt(2, "ann@example.org"), pending},

		{"registration crashed, after ttl", claim(0, now.Add(-claimTTL)), holderAt(0, ""), stale},
		{"change crashed, after ttl", claim(2, longAgo), holderAt(2, "ann@example.org"), stale},
		{"holder moved on", claim(2, now), holderAt(3, "ann@example.org"), stale},
		{"holder existed already", claim(0, now), holderAt(1, "bob@example.com"), stale},
		{"holder changed away", claim(0, t0), holderAt(2, "ann@example.org"), stale},
		{"holder is no customer", claim(0, now), &Customer{Version: 3}, stale},
		{"holder erased", claim(0, longAgo), &Customer{ID: otherID, Version: 2, Email: "ann@example.com", Erased: true}, stale},
		{"no holder loaded", claim(0, now), nil, stale},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.claim.holding(tc.holder, claimTTL, now); got != tc.want {
				t.Errorf("holding = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestEmailClaimApply(t *testing.T) {
	want := EmailClaim{ID: claimID("ann@example.com"), Email: "ann@example.com", Holder: otherID, At: claimedByOther.ClaimedAt, Version: 3}
	history := []Event{claimedBy(customerID, 0, t0), releasedByOne, claimedByOther}
	if got := emailClaim(history...)(); !reflect.DeepEqual(*got, want) {
		t.Errorf("claim = %+v\nwant %+v", *got, want)
	}
	for _, e := range encode(t, EmailClaimType, want.ID, history) {
		ev, err := Decode(e)
		if err != nil || e.AggregateType != EmailClaimType || ev.EventType() != e.Type {
			t.Fatalf("decode %s of %s: %v", e.Type, e.AggregateType, err)
		}
	}
	if got := emailClaim(claimedBy(customerID, 0, t0), releasedByOne)(); got.Holder != uuid.Nil || got.Version != 2 {
		t.Errorf("released claim = %+v, want no holder", *got)
	}
}

func TestEmailClaimID(t *testing.T) {
	a, _ := ParseEmail(" Ann@Example.COM ")
	b, _ := ParseEmail("aNN@example.com")
	c, _ := ParseEmail("ann@example.org")
	if EmailClaimID(a) != EmailClaimID(b) || EmailClaimID(a).Version() != 5 {
		t.Errorf("claim ids %s, %s: want one UUIDv5 for addresses equal but for case", EmailClaimID(a), EmailClaimID(b))
	}
	if EmailClaimID(a) == EmailClaimID(c) {
		t.Error("two addresses share a claim id")
	}
	if a.Key() != "ann@example.com" {
		t.Errorf("key %q", a.Key())
	}
}
