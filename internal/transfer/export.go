package transfer

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// Rows are what an export writes after the events: rows the source keeps
// beside its log, which the events need on the target. A nil field writes
// none of its kind.
type Rows struct {
	// Keys are the live data keys, as KeyLines: the personal fields of the
	// events are ciphertext, which the target reads with these keys (and
	// the source's KEK, which is never in the stream).
	Keys KeySource
	// Claims are the e-mail address claims, as ClaimLines, after the keys.
	Claims ClaimSource
}

// KeySource is what an export reads of the source's data keys.
type KeySource interface {
	Scan(ctx context.Context, fn func(store.WrappedKey) error) error
}

// ClaimSource is what an export reads of the source's e-mail claims.
type ClaimSource interface {
	Scan(ctx context.Context, fn func(key uuid.UUID, row store.ClaimRow) error) error
}

// Export writes every event of src to w as a stream: the Header, one Line
// per event in the order src's Replay hands them, the rows, and the
// Trailer; a batch at a time, so that memory holds a batch, never the log.
// For payloads exactly as stored, src should read without upcasting (a
// store opened with no Upcaster): the stream then keeps each event's
// stored schema version, and the target's reads upcast it as the source's
// did. It returns how many events it wrote; n counts them as it goes, for
// a progress report (nil: none).
func Export(ctx context.Context, src store.Log, rows Rows, w io.Writer, now time.Time, n *Counter) (int64, error) {
	total, err := src.Count(ctx)
	if err != nil {
		return 0, fmt.Errorf("export: count: %w", err)
	}
	n.setTotal(total)
	bw := bufio.NewWriterSize(w, 1<<20)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(Header{Format: Format, Version: FormatVersion, Created: now.UTC(), Events: total}); err != nil {
		return 0, fmt.Errorf("export: header: %w", err)
	}
	var written int64
	_, err = src.Replay(ctx, 0, func(_ context.Context, events []store.Event) error {
		for _, e := range events {
			if err := enc.Encode(lineOf(e)); err != nil {
				return fmt.Errorf("event %s: %w", e.ID, err)
			}
		}
		written += int64(len(events))
		n.add(int64(len(events)), 0)
		return nil
	})
	if err != nil {
		return written, fmt.Errorf("export: %w", err)
	}
	var nkeys, nclaims int64
	if rows.Keys != nil {
		if err := rows.Keys.Scan(ctx, func(k store.WrappedKey) error {
			nkeys++
			return enc.Encode(KeyLine{Key: WrappedKey{Subject: k.Subject, KEK: k.KEK, Wrapped: k.Wrapped, Created: k.Created.UTC()}})
		}); err != nil {
			return written, fmt.Errorf("export: data keys: %w", err)
		}
	}
	if rows.Claims != nil {
		if err := rows.Claims.Scan(ctx, func(key uuid.UUID, r store.ClaimRow) error {
			nclaims++
			return enc.Encode(ClaimLine{Claim: ClaimRow{Key: key, Attempt: r.Attempt, Customer: r.Customer, Since: r.Since, At: r.At.UTC()}})
		}); err != nil {
			return written, fmt.Errorf("export: e-mail claims: %w", err)
		}
	}
	if err := enc.Encode(Trailer{End: true, Events: written, Keys: nkeys, Claims: nclaims}); err != nil {
		return written, fmt.Errorf("export: trailer: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return written, fmt.Errorf("export: %w", err)
	}
	return written, nil
}
