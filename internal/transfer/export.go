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
	if err := enc.Encode(Trailer{End: true, Events: written}); err != nil {
		return written, fmt.Errorf("export: trailer: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return written, fmt.Errorf("export: %w", err)
	}
	return written, nil
}
