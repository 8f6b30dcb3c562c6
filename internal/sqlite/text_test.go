package sqlite

import (
	"testing"

	"github.com/google/uuid"
)

// TestUUIDTexts checks the one-allocation text of ids against the uuid
// package's own.
func TestUUIDTexts(t *testing.T) {
	ids := []uuid.UUID{uuid.Nil, uuid.Max, uuid.New(), uuid.Must(uuid.NewV7()), uuid.MustParse("0192f3a4-5b6c-7d8e-9f01-23456789abcd")}
	got := make([]string, len(ids))
	uuidTexts(got, ids...)
	for i, id := range ids {
		if got[i] != id.String() {
			t.Errorf("uuidTexts[%d] = %q, want %q", i, got[i], id.String())
		}
	}
	var four [4]string
	if n := testing.AllocsPerRun(100, func() { uuidTexts(four[:], ids[2], ids[3], ids[4], ids[0]) }); n > 1 {
		t.Errorf("uuidTexts of 4 ids: %v allocations, want 1", n)
	}
}
