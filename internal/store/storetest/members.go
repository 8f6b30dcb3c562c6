package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// MembershipOpener returns a new, empty store that implements both
// store.Membership and store.Leases (Holders reads the leases), closed in
// t.Cleanup.
type MembershipOpener func(t *testing.T) interface {
	store.Membership
	store.Leases
}

// RunMembership runs the conformance suite of store.Membership against
// stores returned by open. Subtests run in parallel, each on its own
// store.
//
// Beyond the doc comments of store.Membership, the suite holds a backend
// to: a heartbeat's ttl may be rounded up to whole seconds, never down, and
// a member whose ttl ran out is gone within two seconds more.
func RunMembership(t *testing.T, open MembershipOpener) {
	tests := []struct {
		name string
		fn   func(*testing.T, membership)
	}{
		{"Members", testMembers},
		{"Expiry", testMemberExpiry},
		{"Leave", testMemberLeave},
		{"Holders", testHolders},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
}

type membership interface {
	store.Membership
	store.Leases
}

func members(t *testing.T, m store.Membership, group string) []string {
	t.Helper()
	got, err := m.Members(testContext(t), group)
	if err != nil {
		t.Fatalf("Members(%s): %v", group, err)
	}
	return got
}

func beat(t *testing.T, m store.Membership, group, instance string, ttl time.Duration) {
	t.Helper()
	if err := m.Heartbeat(testContext(t), group, instance, ttl); err != nil {
		t.Fatalf("Heartbeat(%s, %s): %v", group, instance, err)
	}
}

// testMembers: the members of a group are the instances that beat in it,
// sorted, each once however often it beats; groups are independent.
func testMembers(t *testing.T, m membership) {
	g1, g2 := "projector-"+uuid.NewString(), "relay-"+uuid.NewString()
	if got := members(t, m, g1); len(got) != 0 {
		t.Fatalf("Members of a group nobody joined = %q, want none", got)
	}
	for _, i := range []string{"c", "a", "b", "a"} {
		beat(t, m, g1, i, time.Minute)
	}
	beat(t, m, g2, "z", time.Minute)
	if got := members(t, m, g1); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("Members(%s) = %q, want [a b c]", g1, got)
	}
	if got := members(t, m, g2); !slices.Equal(got, []string{"z"}) {
		t.Errorf("Members(%s) = %q, want [z]", g2, got)
	}
}

// testMemberExpiry: a member that stops beating is gone once its ttl has
// run out (and not before), while one that keeps beating stays.
func testMemberExpiry(t *testing.T, m membership) {
	g := "g-" + uuid.NewString()
	const ttl = time.Second
	start := time.Now()
	beat(t, m, g, "stops", ttl)
	beat(t, m, g, "stays", ttl)
	for {
		got := members(t, m, g)
		switch {
		case slices.Equal(got, []string{"stays"}):
			if d := time.Since(start); d < ttl {
				t.Fatalf("the member that stopped beating was gone after %v, before its ttl of %v", d, ttl)
			}
			return
		case !slices.Equal(got, []string{"stays", "stops"}):
			t.Fatalf("Members = %q, want [stays stops] until stops expires, then [stays]", got)
		case time.Since(start) > ttl+3*time.Second:
			t.Fatalf("the member that stopped beating is still there %v after its ttl of %v", time.Since(start), ttl)
		}
		time.Sleep(ttl / 4)
		beat(t, m, g, "stays", ttl)
	}
}

// testMemberLeave: a member that leaves is gone at once; the others stay.
func testMemberLeave(t *testing.T, m membership) {
	g := "g-" + uuid.NewString()
	beat(t, m, g, "a", time.Minute)
	beat(t, m, g, "b", time.Minute)
	if err := m.Leave(testContext(t), g, "a"); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	if got := members(t, m, g); !slices.Equal(got, []string{"b"}) {
		t.Errorf("Members after a left = %q, want [b]", got)
	}
	if err := m.Leave(testContext(t), g, "nobody"); err != nil {
		t.Errorf("Leave of a non-member: %v, want nil", err)
	}
}

// testHolders: Holders shows each lease's holder and epoch as Leases set
// them, in the order asked, and none for a lease never taken.
func testHolders(t *testing.T, m membership) {
	ctx := testContext(t)
	p := "projector-" + uuid.NewString()
	s0, s1, s2 := store.Shard{Index: 0, Count: 4}.Lease(p), store.Shard{Index: 1, Count: 4}.Lease(p), store.Shard{Index: 2, Count: 4}.Lease(p)
	holders := func(want ...store.Holding) {
		t.Helper()
		got, err := m.Holders(ctx, []string{s0, s1, s2})
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("Holders = %v, %v; want %v", got, err, want)
		}
	}
	holders(store.Holding{}, store.Holding{}, store.Holding{})
	for _, take := range []struct {
		lease, holder string
	}{{s0, "a"}, {s2, "b"}} {
		if e, err := m.Acquire(ctx, take.lease, take.holder, time.Minute); err != nil || e != 1 {
			t.Fatalf("Acquire(%s, %s) = %d, %v; want epoch 1", take.lease, take.holder, e, err)
		}
	}
	holders(store.Holding{Holder: "a", Epoch: 1}, store.Holding{}, store.Holding{Holder: "b", Epoch: 1})
	if err := m.Release(ctx, s0, "a"); err != nil {
		t.Fatal(err)
	}
	if e, err := m.Acquire(ctx, s0, "c", time.Minute); err != nil || e != 2 {
		t.Fatalf("Acquire(%s, c) after a release = %d, %v; want epoch 2", s0, e, err)
	}
	holders(store.Holding{Holder: "c", Epoch: 2}, store.Holding{}, store.Holding{Holder: "b", Epoch: 1})
	if got, err := m.Holders(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("Holders(nil) = %v, %v; want none", got, err)
	}
}
