package sqlite

import (
	"encoding/hex"
	"strings"

	"github.com/google/uuid"
)

// uuidTexts sets dst[i] to the canonical text of ids[i] (as
// uuid.UUID.String has it), all in one allocation: the hot paths bind
// several ids a row, and one string each, plus the driver.Valuer's boxing,
// was a good part of their allocations.
func uuidTexts(dst []string, ids ...uuid.UUID) {
	var b strings.Builder
	b.Grow(36 * len(ids))
	var buf [36]byte
	for _, u := range ids {
		hex.Encode(buf[0:8], u[0:4])
		buf[8] = '-'
		hex.Encode(buf[9:13], u[4:6])
		buf[13] = '-'
		hex.Encode(buf[14:18], u[6:8])
		buf[18] = '-'
		hex.Encode(buf[19:23], u[8:10])
		buf[23] = '-'
		hex.Encode(buf[24:], u[10:])
		b.Write(buf[:])
	}
	s := b.String()
	for i := range ids {
		dst[i] = s[36*i : 36*(i+1)]
	}
}
