package aggregate

import (
	"strings"
	"time"

	"github.com/google/uuid"
)

// EmailClaimType is the aggregate type of the email claims of earlier
// builds: the reservation of one address by one customer as an event
// stream, read and never written now (claims are rows, see claims.go). Its
// events are bookkeeping, not facts for other services: see
// PublishedTypes.
const EmailClaimType = "EmailClaim"

// emailClaimSpace is the UUIDv5 namespace of claim stream ids. Changing it
// forgets every claim.
var emailClaimSpace = uuid.MustParse("4727093b-7f90-4d04-ba2a-cb0710e3e580")

// PublishedTypes returns the aggregate types whose events are facts for
// other services, the ones the relay publishes: orders and customers, not
// email claims.
func PublishedTypes() []string { return []string{OrderType, CustomerType} }

// EmailClaimID returns the key of addr's claims without personal-data
// protection (WithPersonalData): a UUIDv5 of its key, so that every
// instance finds one key per address without an index.
func EmailClaimID(addr Email) uuid.UUID { return claimID(addr.Key()) }

func claimID(key string) uuid.UUID { return uuid.NewSHA1(emailClaimSpace, []byte(key)) }

// emailKey returns the key of an address as ParseEmail returns it (and as
// customers store it): the whole address lower-cased. Mail systems treat
// local parts case-insensitively in practice, so Ann@x.com and ann@x.com
// are one mailbox, and one customer's.
func emailKey(addr string) string { return strings.ToLower(addr) }

// EmailClaim is an address's reservation by one customer: a claim row
// (store.ClaimRow), or a claim stream of an earlier build as its events
// leave it.
//
// A claim is held by Holder while it is live (the holder's current address
// has this key) or pending (the holder has written nothing since it
// claimed, and the claim is younger than the handler's claim TTL: the
// holder may be between its claim and its customer write). Any other claim
// is stale: the holder crashed between the two writes, or failed its
// customer write, or moved on; any customer may take it over. See holding
// for why this rule never lets two customers end with one address.
type EmailClaim struct {
	ID      uuid.UUID
	Email   string    // the key, as emailKey returns it
	Holder  uuid.UUID // uuid.Nil when never claimed or released
	Since   int64     // the holder's version when it claimed
	At      time.Time // when the holder claimed
	Version int64     // 0 when the claim has no events
}

// emailTaken is the refusal of an address another customer holds. It does
// not repeat the address: a refusal may be kept as an Idempotency-Key's
// answer, which must hold no personal data in plaintext.
func emailTaken() error {
	return &Error{Kind: ErrRejected, Code: "email_taken", Field: "/email",
		Detail: "the address is used by another customer"}
}

// holding is what a claim is to its address: stale, pending or live.
type holding int

const (
	stale   holding = iota // its holder can no longer write the address
	pending                // its holder may be between its claim and its write
	live                   // its holder's current address is this one
)

// holding tells what the claim is, given its holder as loaded (a Customer
// without events when it has none, nil when unknown: stale).
//
// Why it is safe: a stale claim's holder can no longer write the address.
// A holder whose version moved past Since cannot append at Since any more;
// if it retries, it claims again, after any takeover, and is refused. A
// holder still at Since is given ttl from its claim: the handler bounds the
// customer write that follows a claim to a much shorter time (claimHold),
// so a takeover after ttl never races that write. The rule assumes that a
// store write is decided within ttl − claimHold of its deadline and that
// instances' clocks agree within that margin. A claim is never held for
// ever: at most ttl past a crash, and not at all once the holder moved on.
func (c *EmailClaim) holding(holder *Customer, ttl time.Duration, now time.Time) holding {
	switch {
	case holder == nil, holder.Erased: // an erased customer holds no address
		return stale
	case holder.ID == c.Holder && holder.Version > 0 && emailKey(holder.Email) == c.Email:
		return live
	case holder.Version <= c.Since && now.Before(c.At.Add(ttl)):
		return pending
	}
	return stale
}

// apply changes the claim by one event.
func (c *EmailClaim) apply(e Event) {
	switch e := e.(type) {
	case EmailClaimed:
		c.Email, c.Holder, c.Since, c.At = e.Email, e.CustomerID, e.CustomerVersion, e.ClaimedAt
	case EmailReleased:
		c.Email, c.Holder, c.Since, c.At = e.Email, uuid.Nil, 0, time.Time{}
	}
}

// replayed records the id and the version the claim's history reached.
func (c *EmailClaim) replayed(id uuid.UUID, version int64) {
	c.ID, c.Version = id, version
}
