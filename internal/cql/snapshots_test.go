package cql

import (
	"testing"

	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/storetest"
)

func TestSnapshotsConformance(t *testing.T) {
	storetest.RunSnapshots(t, func(t *testing.T) store.Snapshots {
		return mustOpen(t, testConfig(t), nil)
	})
}
