package cql

import (
	"testing"

	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/storetest"
)

func TestIdempotencyConformance(t *testing.T) {
	storetest.RunIdempotency(t, func(t *testing.T) store.Idempotency {
		return mustOpen(t, testConfig(t), nil)
	})
}
