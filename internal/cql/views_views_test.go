package cql

import (
	"testing"
	"time"

	"github.com/orderd/orderd/internal/readmodel/readmodeltest"
)

// TestViewsConformance runs the read-model suite on Cassandra (or ScyllaDB).
// The suite's ids are its tests' own, so all of them share one keyspace,
// which saves a schema creation per test; every Views has a session of its
// own, as a separate orderd process would.
func TestViewsConformance(t *testing.T) {
	e := newEnv(t)
	readmodeltest.Run(t, func(t *testing.T) readmodeltest.Backend {
		return readmodeltest.Backend{
			Views:         e.views(t, nil),
			Second:        func(t *testing.T) readmodeltest.Views { return e.views(t, nil) },
			TimePrecision: time.Millisecond,
		}
	})
}
