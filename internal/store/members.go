package store

import (
	"context"
	"time"
)

// Membership lets the instances that share a store find each other, and
// see at a glance who holds which lease, so that they can share the shards
// of a worker out among themselves (package worker's Balanced).
//
// It only balances: two instances that briefly see different members
// may both want a shard, and the lease (Leases, with its fencing epoch)
// still lets only one of them hold it. So a backend may answer from a
// plain read that lags a moment behind, never a lightweight transaction.
type Membership interface {
	// Heartbeat records instance as a live member of group for ttl from
	// the call; an instance calls it again well within ttl to stay one.
	Heartbeat(ctx context.Context, group, instance string, ttl time.Duration) error

	// Leave removes instance from group at once (a graceful shutdown), so
	// that the others need not wait for its heartbeat to expire.
	Leave(ctx context.Context, group, instance string) error

	// Members returns the live members of group, sorted, each once.
	Members(ctx context.Context, group string) ([]string, error)

	// Holders returns the holder and epoch of each lease in names, in the
	// same order: a Holding without a Holder for a lease nobody holds. It
	// is a plain read: Leases.Holder is the authority, this is the view a
	// balancer and /readyz work from.
	Holders(ctx context.Context, names []string) ([]Holding, error)
}

// Holding is a lease's holder ("" for none) and the epoch of its last take
// (0 before the first).
type Holding struct {
	Holder string
	Epoch  int64
}
