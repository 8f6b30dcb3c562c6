package sqlite

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/storetest"
)

func TestSnapshotsConformance(t *testing.T) {
	storetest.RunSnapshots(t, func(t *testing.T) store.Snapshots {
		s, err := OpenSnapshots(t.Context(), filepath.Join(t.TempDir(), "snapshots.db"))
		if err != nil {
			t.Fatalf("OpenSnapshots: %v", err)
		}
		t.Cleanup(func() {
			if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	})
}
