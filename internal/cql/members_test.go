package cql

import (
	"testing"

	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/storetest"
)

func TestMembershipConformance(t *testing.T) {
	storetest.RunMembership(t, func(t *testing.T) interface {
		store.Membership
		store.Leases
	} {
		return mustOpen(t, testConfig(t), nil)
	})
}
