package cql

import (
	"testing"

	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/storetest"
)

func TestDataKeysConformance(t *testing.T) {
	storetest.RunDataKeys(t, func(t *testing.T) store.DataKeys {
		return mustOpen(t, testConfig(t), nil).DataKeys()
	})
}
