package sqlite

import (
	"path/filepath"
	"testing"

	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/storetest"
)

func TestEmailClaimsConformance(t *testing.T) {
	storetest.RunEmailClaims(t, func(t *testing.T) (store.EmailClaims, func() error) {
		s, err := OpenStore(filepath.Join(t.TempDir(), "events.db"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s.EmailClaims(), s.Close
	})
}
