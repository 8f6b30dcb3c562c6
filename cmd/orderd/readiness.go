package main

import (
	"context"
	"fmt"

	"github.com/orderd/orderd/internal/api"
	"github.com/orderd/orderd/internal/oidc"
	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/worker"
)

// readiness reports each component for /readyz: the store; the projector
// and the relay, with this instance's role for each, the active instance,
// and the lag where the backend knows it; the dead letters; and the
// bearer tokens (auth).
//
// Only the store (and the token check) decide readiness: the store is
// "down", which makes the instance unready, when b.Ping fails within
// /readyz's deadline (2 s), and also while its requests fail for a storage
// fault (a full disk, a cluster without quorum, a Cassandra node that is
// cut off, stopping or gone), though a request may get through now and
// then: b.Ping checks the store's health first, which probes with a tiny
// write while it is down, so /readyz notices recovery without traffic.
//
// A worker split into shards (worker.Balanced) shows the shards this
// instance holds (held, with the epoch of each in shards) and the holder
// of every shard as its balancer last saw it, read at its ticks: /readyz
// reads no lease. Its role is active while it holds at least one shard,
// active names the instance that holds the most. With shards, the
// rebuilds run under the whole projector's lease: "rebuilder" shows that
// worker's role and holder.
//
// A worker's trouble never makes the instance unready: another instance
// would take the lease and meet the same poison event, and the fleet would
// empty one instance at a time. A failed projector or relay, a relay that
// stepped down because it could not publish, a Kafka outage (the breaker
// not closed) and dead letters are "degraded": commands are still
// accepted (the relay's events wait in the outbox), and the metrics
// (orderd_worker_up) and alerts say what to look at. A standby is "up": it
// is ready to take over.
func readiness(b *backend, projector *worker.Balanced, rebuildWorker *worker.Elected, relayWorker *worker.Balanced, rp relayParts, tokens *oidc.Verifier) api.Readiness {
	return func(ctx context.Context) map[string]api.Component {
		out := map[string]api.Component{"auth": authComponent(tokens)}
		if err := b.Ping(ctx); err != nil {
			out["store"] = api.Component{Status: "down", Detail: err.Error()}
		} else {
			out["store"] = api.Component{Status: "up"}
		}
		if projector == nil {
			out["projector"] = api.Component{Status: "off", Detail: "not run on this instance (-workers): the instances that run it keep the read models"}
		} else {
			out["projector"] = workerComponent(ctx, b.feed, projector.Name(), projector.State())
		}
		if rebuildWorker != nil {
			c := electedComponent(rebuildWorker.State())
			out["rebuilder"] = c
		}
		switch {
		case rp.kafka == nil:
			out["relay"] = api.Component{Status: "off", Detail: "no Kafka brokers configured; events are kept in the outbox"}
		case relayWorker == nil:
			out["relay"] = api.Component{Status: "off", Detail: "not run on this instance (-workers): the instances that run it publish the events"}
		default:
			c := workerComponent(ctx, b.feed, relayWorker.Name(), relayWorker.State())
			breaker := "kafka circuit breaker " + rp.Breaker()
			switch {
			case c.Status == "degraded":
				c.Detail = breaker + "; " + c.Detail
			case c.Role == worker.RoleActive && rp.Breaker() != "closed":
				c.Status, c.Detail = "degraded", breaker
			case c.Role == worker.RoleActive:
				c.Detail = breaker
			}
			out["relay"] = c
		}
		if counts, err := b.ledger.Count(ctx); err != nil {
			out["dead_letters"] = api.Component{Status: "down", Detail: err.Error()}
		} else {
			n := int64(counts[relay.Failed] + counts[relay.Parked])
			c := api.Component{Status: "up", Lag: &n}
			if n > 0 {
				c.Status = "degraded"
				c.Detail = fmt.Sprintf("%d failed, %d parked behind them", counts[relay.Failed], counts[relay.Parked])
			}
			out["dead_letters"] = c
		}
		return out
	}
}

// authComponent is the token check's part of /readyz: "off" without an
// issuer (the API is open), "down" until the issuer's discovery document
// was read (every API route answers 503 meanwhile), then "up".
func authComponent(tokens *oidc.Verifier) api.Component {
	if tokens == nil {
		return api.Component{Status: "off", Detail: "no OIDC issuer configured: the API is open to every client"}
	}
	if err := tokens.Ready(); err != nil {
		return api.Component{Status: "down", Detail: err.Error()}
	}
	return api.Component{Status: "up", Detail: "bearer tokens of " + tokens.Issuer()}
}

// workerComponent is a worker's part of /readyz: "up", or "degraded" when
// it failed (until it runs again) or stepped down, never "down"; with its
// shards when it is split.
func workerComponent(ctx context.Context, feed store.Feed, name string, st worker.BalanceState) api.Component {
	c := electedComponent(st.State)
	if st.Shards != nil {
		held := st.Held()
		c.Held, c.Members = &held, st.Members
		c.Shards = make([]api.ShardHolder, len(st.Shards))
		for i, sh := range st.Shards {
			c.Shards[i] = api.ShardHolder{Shard: sh.Shard, Holder: sh.Holder, Epoch: sh.Epoch, Here: sh.Here}
		}
	}
	if lag, err := feed.Lag(ctx, name); err == nil && lag.Known {
		events, seconds := lag.Events, lag.Age.Seconds()
		c.Lag, c.LagSeconds = &events, &seconds
	}
	return c
}

// electedComponent is an elected worker's role, holder, epoch and health.
func electedComponent(st worker.State) api.Component {
	c := api.Component{Status: "up", Role: st.Role, Active: st.Leader, Epoch: st.Epoch, Fenced: st.Fenced}
	switch {
	case st.Err != nil:
		c.Status, c.Detail = "degraded", "failed: "+st.Err.Error()
	case st.Aside != nil:
		c.Status, c.Detail = "degraded", st.Aside.Error()
	}
	return c
}
