package transfer

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/orderd/orderd/internal/store"
)

// Export writes every event of src to w as a stream: the Header, one Line
// per event in the order src's Replay hands them, and the Trailer; a batch at a time,
// so that memory holds a batch, never the log. For payloads exactly as
// stored, src should read without upcasting (a store opened with no
// Upcaster): the stream then keeps each event's stored schema version, and
// the target's reads upcast it as the source's did. It returns how many
// events it wrote; n counts them as it goes, for a progress report (nil:
// none).
func Export(ctx context.Context, src store.Log, w io.Writer, now time.Time, n *Counter) (int64, error) {
	return ExportWithKeys(ctx, src, nil, w, now, n)
}

// KeySource is what an export reads of the source's data keys.
type KeySource interface {
	Scan(ctx context.Context, fn func(store.WrappedKey) error) error
}

// ExportWithKeys is Export, and writes every live data key of keys (nil:
// none) after the events, as KeyLines: the personal fields of the events
// are ciphertext, which the target reads with these keys (and the source's
// KEK, which is never in the stream).
func ExportWithKeys(ctx context.Context, src store.Log, keys KeySource, w io.Writer, now time.Time, n *Counter) (int64, error) {
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
	var nkeys int64
	if keys != nil {
		if err := keys.Scan(ctx, func(k store.WrappedKey) error {
			nkeys++
			return enc.Encode(KeyLine{Key: WrappedKey{Subject: k.Subject, KEK: k.KEK, Wrapped: k.Wrapped, Created: k.Created.UTC()}})
		}); err != nil {
			return written, fmt.Errorf("export: data keys: %w", err)
		}
	}
	if err := enc.Encode(Trailer{End: true, Events: written, Keys: nkeys}); err != nil {
		return written, fmt.Errorf("export: trailer: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return written, fmt.Errorf("export: %w", err)
	}
	return written, nil
}
