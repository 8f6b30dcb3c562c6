package sqlite

import (
	"path/filepath"
	"testing"

	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/storetest"
)

func TestEmailClaimsConformance(t *testing.T) {
	storetest.RunEmailClaims(t, func(t *testing.T) (store.EmailClaims, func() error) {
		d := openTestDataKeys(t, filepath.Join(t.TempDir(), "datakeys.db"))
		return d.Claims(), d.Close
	})
}
