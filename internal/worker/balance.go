package worker

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/thejerf/suture/v4"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/store"
)

// Balanced runs a worker split into the shards of a store (store.Sharded):
// one Elected per shard, each with its own lease (store.Shard.Lease) and
// its own fence, which carries the shard (so that the feed hands the
// worker only that shard's events). The instances share the shards out
// among themselves through a store.Membership: every ttl/3 each one
// beats in the worker's group, reads the live members, and works out the
// same assignment from them (assign); it wants the shards assigned to it
// and stops wanting the others, which its Elected then hand over.
//
// The leases keep correctness, the membership only balances: two
// instances that briefly disagree on the members may both want a shard,
// and only one of them holds its lease. So:
//   - with k live instances each holds N/k shards, give or take one;
//   - a joining instance takes its share within about one ttl: the
//     holders see it at their next tick and release what is now its, and
//     it takes each shard as soon as it is free;
//   - a dead instance's heartbeats end, so it leaves the members within
//     ttl; its leases lapse within ttl of its last renewal, and the new
//     assignees take them at their next try;
//   - a leaving instance (Serve's context ends) leaves the members and
//     releases its leases at once;
//   - a shard moves only when the members change; and a shard nobody has
//     held for three ticks in a row at the same epoch and under the same
//     assignee (who cannot take it) is taken by whoever sees it so, and
//     kept until the members change;
//   - an instance whose worker stepped down (StepDown) on a shard leaves
//     the members while it stands aside, so that its shards go to the
//     others, and joins again afterwards (with RejoinWhen, once its check
//     passes).
//
// With one shard (SQLite, or a keyspace made with one) there is no
// balancing: it is exactly one Elected under the worker's own name,
// taken by whichever instance gets there first.
type Balanced struct {
	name    string // the consumer, the members' group, and the prefix of the shards' leases
	holder  string // this instance
	ttl     time.Duration
	members store.Membership
	shards  []*Elected
	log     *zap.Logger
	sup     *suture.Supervisor

	mu      sync.Mutex
	want    []bool
	live    []string        // the members at the last tick
	view    []store.Holding // each shard's holder at the last tick
	seen    time.Time       // when view was read
	unheld  []int           // for how many ticks in a row each shard was seen unheld, under its assignee
	orphans map[int]string  // shards wanted as orphans → the members then
	err     error           // why the last tick failed, nil when it did not
	out     bool            // out of the members since a shard stepped down, until rejoin passes
	rejoin  func(ctx context.Context) error
}

// RejoinWhen makes an instance whose worker stepped down on a shard stay
// out of the members after its standing aside, until check passes (the
// relay: until Kafka answers), so that it does not take its shards back
// only to step down again. Without it the instance joins again as soon as
// it no longer stands aside. It returns b.
func (b *Balanced) RejoinWhen(check func(ctx context.Context) error) *Balanced {
	b.rejoin = check
	return b
}

// NewBalanced returns the worker name split into n shards, run by work for
// each shard this instance (holder) holds; work's context carries the
// shard's fence (store.FenceOf tells the shard). leases and members are
// the store's; ttl is the leases' (and the heartbeats'). Its shards' Elected
// run under a supervisor of its own, which waits stopWait for them on
// stop. n < 2 is the whole worker: one Elected named name, no membership.
func NewBalanced(leases store.Leases, members store.Membership, name, holder string, n int, ttl, stopWait time.Duration, work func(ctx context.Context) error, log *zap.Logger) *Balanced {
	b := &Balanced{name: name, holder: holder, ttl: ttl, members: members, log: log,
		sup: NewSupervisor(name, stopWait, log)}
	if n < 2 {
		e := NewElected(leases, name, holder, ttl, work, log)
		b.shards = []*Elected{e}
		b.sup.Add(e)
		return b
	}
	b.want, b.unheld, b.orphans = make([]bool, n), make([]int, n), map[int]string{}
	for i := range n {
		s := store.Shard{Index: i, Count: n}
		e := NewElected(leases, s.Lease(name), holder, ttl, work, log)
		e.shard = s
		e.want = func() bool { return b.wanted(i) }
		e.nudge = make(chan struct{}, 1)
		b.shards = append(b.shards, e)
		// Each shard spends a failure budget of its own: one blip of the
		// store or of Kafka (or a pause of this process) fails many shards
		// at once, and on a budget shared by all of them the third failure
		// put every shard's restart into the supervisor's backoff (5 s and
		// more), the shards that had not failed yet included.
		sup := NewSupervisor(e.name, stopWait, log)
		sup.Add(e)
		b.sup.Add(sup)
	}
	b.sup.Add(balancer{b})
	return b
}

// Serve runs the shards' workers and the balancing until ctx ends, then
// leaves the members and returns once every worker has stopped and given
// its lease up.
func (b *Balanced) Serve(ctx context.Context) error { return b.sup.Serve(ctx) }

// String names the worker in the supervisor's log.
func (b *Balanced) String() string { return b.name }

// Name returns the worker's name, its consumer on the feed.
func (b *Balanced) Name() string { return b.name }

// Shards returns how many shards the worker is split into (1: whole).
func (b *Balanced) Shards() int { return len(b.shards) }

// Shard returns the Elected of shard i.
func (b *Balanced) Shard(i int) *Elected { return b.shards[i] }

func (b *Balanced) wanted(i int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.want[i]
}

// balancer is the suture service that runs the ticks of a Balanced.
type balancer struct{ b *Balanced }

func (s balancer) String() string { return s.b.name + " balancer" }

func (s balancer) Serve(ctx context.Context) error {
	b := s.b
	t := time.NewTicker(b.ttl / 3)
	defer t.Stop()
	for {
		b.tick(ctx)
		select {
		case <-ctx.Done():
			// Leave first: the others then give this instance's shards to
			// themselves, and take each as soon as its Elected released it.
			b.setWants(make([]bool, len(b.shards)))
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.ttl/3)
			defer cancel()
			if err := b.members.Leave(lctx, b.name, b.holder); err != nil {
				b.log.Warn("balance: leaving the members", zap.Error(err))
			}
			return nil
		case <-t.C:
		}
	}
}

// tick beats (or leaves the members while a shard stands aside), reads the
// members and the holders, and sets which shards this instance wants.
func (b *Balanced) tick(ctx context.Context) {
	tctx, cancel := context.WithTimeout(ctx, b.ttl/3)
	defer cancel()
	names := make([]string, len(b.shards))
	aside := false
	for i, e := range b.shards {
		names[i] = e.name
		aside = aside || e.standingAside()
	}
	b.mu.Lock()
	out, rejoin := b.out, b.rejoin
	b.mu.Unlock()
	switch {
	case aside:
		out = true
	case out && rejoin != nil:
		if err := rejoin(tctx); err != nil {
			b.log.Warn("balance: staying out of the members after a step-down", zap.Error(err))
		} else {
			out = false
		}
	default:
		out = false
	}
	var err error
	if out {
		err = b.members.Leave(tctx, b.name, b.holder)
	} else {
		err = b.members.Heartbeat(tctx, b.name, b.holder, b.ttl)
	}
	var (
		live []string
		view []store.Holding
	)
	if err == nil {
		live, err = b.members.Members(tctx, b.name)
	}
	if err == nil {
		view, err = b.members.Holders(tctx, names)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.err, b.out = err, out
	if err != nil {
		// Keep wanting what was wanted: the Elected's own deadlines stop
		// the workers whose leases cannot be renewed.
		if ctx.Err() == nil {
			b.log.Warn("balance: cannot read the members or the holders", zap.Error(err))
		}
		return
	}
	owner := assign(len(b.shards), live)
	var prevOwner []string // the assignees before, when the members changed
	if !slices.Equal(live, b.live) {
		b.log.Info("balance: the members changed", zap.Strings("members", live), zap.Strings("before", b.live))
		prevOwner = assign(len(b.shards), b.live)
	}
	prev := b.view
	b.live, b.view, b.seen = live, view, time.Now()
	key := strings.Join(live, ",")
	want := make([]bool, len(b.shards))
	for i, h := range view {
		switch {
		case prevOwner != nil && prevOwner[i] != owner[i]:
			// A new assignee (the members changed) gets its own three
			// ticks: the unheld ticks counted what the old one could not
			// take. Without this, a dead member's shard, unheld since its
			// lease lapsed, went as an orphan to whichever instance saw
			// the change first, not to its new assignee, and stayed there
			// until the members changed again, the shares uneven
			// meanwhile.
			b.unheld[i] = 0
			if h.Holder == "" {
				b.unheld[i] = 1
			}
		case h.Holder != "":
			b.unheld[i] = 0
		case i < len(prev) && prev[i].Epoch != h.Epoch:
			// Taken and given up again since the last tick (every take
			// bumps the epoch): a shard in transit between holders, as
			// when the members change, is not one nobody can take.
			b.unheld[i] = 1
		default:
			b.unheld[i]++
		}
		under, orphan := b.orphans[i]
		switch {
		case out:
		case owner[i] == b.holder:
			want[i] = true
		case orphan && under == key:
			want[i] = true // an orphan is kept until the members change
		case b.unheld[i] >= 3:
			// Nobody took it for three ticks: its assignee cannot. Take it
			// until the members change (then it goes where they say).
			want[i] = true
			b.orphans[i] = key
			b.log.Info("balance: taking a shard nobody holds", zap.Int("shard", i), zap.String("assignee", owner[i]))
		}
		if !want[i] || owner[i] == b.holder {
			delete(b.orphans, i)
		}
	}
	b.setWantsLocked(want)
}

func (b *Balanced) setWants(want []bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.setWantsLocked(want)
}

// setWantsLocked sets the wanted shards, and nudges the Elected of each
// shard whose want changed, so that it takes or hands over at once.
func (b *Balanced) setWantsLocked(want []bool) {
	for i, w := range want {
		if b.want[i] == w {
			continue
		}
		b.want[i] = w
		select {
		case b.shards[i].nudge <- struct{}{}:
		default:
		}
	}
}

// assign gives each of n shards to one of members (sorted), n/k or n/k+1
// each (the first n%k members, in sorted order, take one more): shard by
// shard, in order, to the member of highest rendezvous weight that has
// room left. Every instance that sees the same members works out the same
// assignment; a joining or leaving member moves about the shards it gains
// or loses, few others (plain rendezvous hashing would move only those,
// but its shares spread by ±√(n/k); the room cap is what keeps them
// within one). Nil members: every shard to "".
func assign(n int, members []string) []string {
	out := make([]string, n)
	k := len(members)
	if k == 0 {
		return out
	}
	room := make([]int, k)
	for j := range room {
		room[j] = n / k
		if j < n%k {
			room[j]++
		}
	}
	seeds := make([]uint64, k)
	for j, m := range members {
		h := fnv.New64a()
		h.Write([]byte(m))
		seeds[j] = h.Sum64()
	}
	for i := range n {
		best, bestW := -1, uint64(0)
		for j := range members {
			if room[j] == 0 {
				continue
			}
			if w := mix(seeds[j] ^ uint64(i)*0x9e3779b97f4a7c15); best < 0 || w > bestW {
				best, bestW = j, w
			}
		}
		out[i] = members[best]
		room[best]--
	}
	return out
}

// mix is splitmix64's finaliser: it spreads a seed's bits over the word.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// ShardState is one shard of a Balanced worker as /readyz shows it.
type ShardState struct {
	Shard int
	// Holder is the instance that holds the shard's lease as the last
	// tick saw it ("" for none, or not seen yet); this instance when it
	// holds it now.
	Holder string
	// Epoch is the lease's epoch: of this instance's take while it holds
	// the shard, else as the last tick saw it.
	Epoch int64
	Here  bool // this instance holds the shard now
}

// BalanceState is what /readyz shows of a Balanced worker.
type BalanceState struct {
	State // Role active when this instance holds at least one shard; Err, Aside and Fenced of any shard
	// Shards is every shard of a worker split into more than one, in
	// order; nil for a whole worker.
	Shards  []ShardState
	Members []string  // the live members at the last tick
	Seen    time.Time // when the holders of Shards were read; zero before the first tick
}

// Held returns how many shards this instance holds now.
func (s BalanceState) Held() int {
	if s.Shards == nil {
		if s.Role == RoleActive {
			return 1
		}
		return 0
	}
	n := 0
	for _, sh := range s.Shards {
		if sh.Here {
			n++
		}
	}
	return n
}

// State returns this instance's view of the worker: for a whole worker,
// its Elected's State; for a split one, every shard with its holder as
// the last tick saw it (and as this instance's own leases say for the
// shards it holds), its role active while it holds at least one shard,
// Leader the holder of the most shards, and the first shard's error or
// step-down.
func (b *Balanced) State() BalanceState {
	if len(b.shards) == 1 {
		return BalanceState{State: b.shards[0].State()}
	}
	b.mu.Lock()
	view, live, seen, err := slices.Clone(b.view), slices.Clone(b.live), b.seen, b.err
	b.mu.Unlock()
	out := BalanceState{State: State{Role: RoleStandby}, Members: live, Seen: seen, Shards: make([]ShardState, len(b.shards))}
	count := map[string]int{}
	for i, e := range b.shards {
		st := e.State()
		sh := ShardState{Shard: i}
		if i < len(view) && time.Since(seen) <= b.ttl {
			sh.Holder, sh.Epoch = view[i].Holder, view[i].Epoch
		}
		switch {
		case st.Role == RoleActive:
			sh.Holder, sh.Epoch, sh.Here = b.holder, st.Epoch, true
			out.Role = RoleActive
		case sh.Holder == b.holder:
			sh.Holder = "" // the view is older than the hand-over
		}
		if sh.Holder != "" {
			count[sh.Holder]++
		}
		out.Epoch = max(out.Epoch, st.Epoch)
		out.Fenced += st.Fenced
		if out.Err == nil && st.Err != nil {
			out.Err = fmt.Errorf("shard %d: %w", i, st.Err)
		}
		if out.Aside == nil && st.Aside != nil {
			out.Aside = fmt.Errorf("shard %d: %w", i, st.Aside)
		}
		out.Shards[i] = sh
	}
	if out.Err == nil && err != nil {
		out.Err = fmt.Errorf("balance: %w", err)
	}
	for h, n := range count {
		if n > count[out.Leader] || n == count[out.Leader] && h < out.Leader {
			out.Leader = h
		}
	}
	return out
}
