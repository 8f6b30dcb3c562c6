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

func TestEmailClaimDecisions(t *testing.T) {
	var (
		free     = emailClaim()
		taken    = wantErr{ErrRejected, "email_taken", "/email"}
		stale    = t0 // claimed long before now
		claimed  = func(v int64) []Event { return events(claimedBy(customerID, v, now)) }
		released = emailClaim(claimedBy(customerID, 0, t0), releasedByOne)
	)
	// A foreign claim stream: a client gave a customer or an order the
	// claim's id.
	foreign := func() *EmailClaim {
		c := &EmailClaim{}
		c.replayed(uuid.Nil, 1)
		return c
	}
	tests := []struct {
		name   string
		given  func() *EmailClaim
		holder *Customer // the holder as loaded, when another customer
		email  string
		v      int64 // the claiming customer's version
		then   []Event
		err    wantErr
	}{
		{"free", free, nil, "ann@example.com", 0, claimed(0), ok},
		{"free, key lower-cased", free, nil, "Ann@example.com", 0, claimed(0), ok},
		{"free for a change", free, nil, "ann@example.com", 4, claimed(4), ok},
		{"released", released, nil, "ann@example.com", 0, claimed(0), ok},
		{"own claim again", emailClaim(claimedBy(customerID, 0, now)), nil, "ann@example.com", 2, claimed(2), ok},

		{"live", emailClaim(claimedBy(otherID, 0, stale)), holderAt(1, "ann@example.com"), "ann@example.com", 0, noEvents, taken},
		{"live in another case", emailClaim(claimedBy(otherID, 0, stale)), holderAt(3, "Ann@example.com"), "ANN@example.com", 0, noEvents, taken},
		{"live after other changes", emailClaim(claimedBy(otherID, 0, stale)), holderAt(5, "ann@example.com"), "ann@example.com", 0, noEvents, taken},
		{"pending registration", emailClaim(claimedByOther), holderAt(0, ""), "ann@example.com", 0, noEvents, taken},
		{"pending change", emailClaim(claimedBy(otherID, 2, now.Add(-59*time.Second))), holderAt(2, "ann@example.org"), "ann@example.com", 0, noEvents, taken},

		{"registration crashed, after ttl", emailClaim(claimedBy(otherID, 0, now.Add(-claimTTL))), holderAt(0, ""), "ann@example.com", 0, claimed(0), ok},
		{"change crashed, after ttl", emailClaim(claimedBy(otherID, 2, stale)), holderAt(2, "ann@example.org"), "ann@example.com", 0, claimed(0), ok},
		{"holder moved on", emailClaim(claimedBy(otherID, 2, now)), holderAt(3, "ann@example.org"), "ann@example.com", 0, claimed(0), ok},
		{"holder existed already", emailClaim(claimedBy(otherID, 0, now)), holderAt(1, "bob@example.com"), "ann@example.com", 0, claimed(0), ok},
		{"holder changed away", emailClaim(claimedBy(otherID, 0, t0)), holderAt(2, "ann@example.org"), "ann@example.com", 7, claimed(7), ok},
		{"holder is no customer", emailClaim(claimedBy(otherID, 0, now)), &Customer{Version: 3}, "ann@example.com", 0, claimed(0), ok},
		{"foreign stream", foreign, nil, "ann@example.com", 0, noEvents, taken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, before := tc.given(), tc.given()
			got, err := c.Claim(tc.email, customerID, tc.v, tc.holder, claimTTL, now)
			checkErr(t, err, tc.err)
			if !reflect.DeepEqual(got, tc.then) {
				t.Errorf("events = %#v\nwant %#v", got, tc.then)
			}
			if !reflect.DeepEqual(c, before) {
				t.Errorf("the decision changed the claim:\n%+v\nwas %+v", c, before)
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
