package transfer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/orderd/orderd/internal/store"
)

// Target is the part of a store an Import writes through.
type Target interface {
	Append(ctx context.Context, aggregateID uuid.UUID, expected int64, events []store.Event) error
	Version(ctx context.Context, aggregateID uuid.UUID) (aggregateType string, version int64, err error)
}

// Marker sets a feed consumer's progress as if it had handled every event
// of the given aggregates up to the given versions: what an import does for
// the relay when the imported events were published already.
type Marker interface {
	MarkHandled(ctx context.Context, consumer string, versions map[uuid.UUID]int64) error
}

// Options tune an Import; the zero value is usable.
type Options struct {
	// Keys takes the stream's data keys (version 2 streams); nil refuses a
	// stream that holds some.
	Keys interface {
		Create(ctx context.Context, k store.WrappedKey) (store.WrappedKey, error)
	}
	// Claims takes the stream's e-mail address claims (version 3 streams),
	// each row written with Claim (the rows it returns are not read); nil
	// refuses a stream that holds some.
	Claims interface {
		Claim(ctx context.Context, key uuid.UUID, row store.ClaimRow) ([]store.ClaimRow, error)
	}
	// Chunk is how many lines are read, appended and marked at a time
	// (default 4096): the events in memory at once.
	Chunk int
	// Concurrency is how many appends are in flight at once (default 32):
	// different aggregates, so that a batching writer (SQLite) or a
	// cluster (CQL) is kept busy.
	Concurrency int
	// Published names the feed consumers for which the imported events
	// count as handled already (with Marker); none: every consumer hands
	// them, the relay publishes them.
	Published []string
	Marker    Marker
}

// maxAppend caps the events of one Append: a long history goes in several.
const maxAppend = 100

// maxLine caps a line of the stream.
const maxLine = 64 << 20

// Import appends the stream read from r to dst, keeping every event as it
// was: id, sequence, timestamp, metadata and payload. Each aggregate's
// events are appended with the version before them as the expected one,
// so optimistic concurrency holds; events whose sequence dst holds
// already are skipped, so re-running an import that was interrupted
// continues where it stopped, without duplicates (data keys and claim
// rows are written again, harmlessly). It keeps each seen aggregate's
// version in memory (some tens of bytes an aggregate), never the events
// beyond a chunk. n counts the events appended and skipped.
func Import(ctx context.Context, dst Target, r io.Reader, opt Options, n *Counter) error {
	if opt.Chunk <= 0 {
		opt.Chunk = 4096
	}
	if opt.Concurrency <= 0 {
		opt.Concurrency = 32
	}
	if len(opt.Published) > 0 && opt.Marker == nil {
		return errors.New("import: consumers to mark as published, but no Marker")
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), maxLine)
	h, err := readHeader(sc)
	if err != nil {
		return err
	}
	n.setTotal(h.Events)
	im := &importer{dst: dst, opt: opt, n: n, versions: make(map[uuid.UUID]int64)}
	rd := &reader{sc: sc, line: 1}
	for {
		start := rd.line
		chunk, order, err := rd.chunk(opt.Chunk)
		if len(order) > 0 {
			// What was read before a bad or missing line is appended all
			// the same: a re-run skips it.
			if err := im.chunk(ctx, chunk, order); err != nil {
				return err
			}
		}
		if err != nil {
			return err
		}
		if err := im.storeKeys(ctx, rd); err != nil {
			return err
		}
		if err := im.storeClaims(ctx, rd); err != nil {
			return err
		}
		if rd.trailer != nil {
			if rd.trailer.Events != rd.events {
				return fmt.Errorf("import: the trailer counts %d events, the stream held %d", rd.trailer.Events, rd.events)
			}
			if rd.trailer.Keys != rd.nkeys {
				return fmt.Errorf("import: the trailer counts %d data keys, the stream held %d", rd.trailer.Keys, rd.nkeys)
			}
			if rd.trailer.Claims != rd.nclaims {
				return fmt.Errorf("import: the trailer counts %d e-mail claims, the stream held %d", rd.trailer.Claims, rd.nclaims)
			}
			return nil
		}
		if rd.line == start {
			return errors.New("import: the stream ends without its trailer: it was cut short (what it held is imported; import the whole stream again to finish)")
		}
	}
}

func readHeader(sc *bufio.Scanner) (Header, error) {
	var h Header
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return h, fmt.Errorf("import: header: %w", err)
		}
		return h, errors.New("import: empty stream, no header")
	}
	if err := json.Unmarshal(sc.Bytes(), &h); err != nil || h.Format != Format {
		return h, fmt.Errorf("import: line 1 is not an %s header", Format)
	}
	if h.Version < 1 || h.Version > FormatVersion {
		return h, fmt.Errorf("import: stream format version %d, this orderd reads 1 to %d", h.Version, FormatVersion)
	}
	return h, nil
}

// reader reads a stream's lines after its header.
type reader struct {
	sc      *bufio.Scanner
	line    int      // the number of the last line read
	events  int64    // the event lines read
	trailer *Trailer // once read
	// keys are the key lines read and not yet stored; nkeys counts them all.
	keys  []store.WrappedKey
	nkeys int64
	// claims are the claim lines read and not yet stored; nclaims counts
	// them all.
	claims  []ClaimRow
	nclaims int64
}

// chunk reads up to size events and groups them by aggregate, in each
// aggregate's stream order; order lists the aggregates as first met. On a
// bad line it returns what it read before, and the error.
func (rd *reader) chunk(size int) (map[uuid.UUID][]store.Event, []uuid.UUID, error) {
	chunk := make(map[uuid.UUID][]store.Event)
	var order []uuid.UUID
	for read := 0; read < size && rd.trailer == nil && rd.sc.Scan(); read++ {
		rd.line++
		b := rd.sc.Bytes()
		if bytes.HasPrefix(b, keyPrefix) {
			var k KeyLine
			if err := json.Unmarshal(b, &k); err != nil || k.Key.Subject == uuid.Nil && len(k.Key.Wrapped) == 0 {
				return chunk, order, fmt.Errorf("import: line %d: a bad key line", rd.line)
			}
			rd.keys = append(rd.keys, store.WrappedKey{Subject: k.Key.Subject, KEK: k.Key.KEK, Wrapped: k.Key.Wrapped, Created: k.Key.Created})
			continue
		}
		if bytes.HasPrefix(b, claimPrefix) {
			var c ClaimLine
			if err := json.Unmarshal(b, &c); err != nil || c.Claim.Key == uuid.Nil || c.Claim.Attempt == uuid.Nil || c.Claim.Customer == uuid.Nil {
				return chunk, order, fmt.Errorf("import: line %d: a bad claim line", rd.line)
			}
			rd.claims = append(rd.claims, c.Claim)
			continue
		}
		if bytes.HasPrefix(b, trailerPrefix) {
			var t Trailer
			if err := json.Unmarshal(b, &t); err != nil || !t.End {
				return chunk, order, fmt.Errorf("import: line %d: a bad trailer", rd.line)
			}
			rd.trailer = &t
			break
		}
		var l Line
		if err := json.Unmarshal(b, &l); err != nil {
			return chunk, order, fmt.Errorf("import: line %d: %w", rd.line, err)
		}
		e, err := l.event()
		if err != nil {
			return chunk, order, fmt.Errorf("import: line %d: %w", rd.line, err)
		}
		rd.events++
		if _, ok := chunk[e.AggregateID]; !ok {
			order = append(order, e.AggregateID)
		}
		chunk[e.AggregateID] = append(chunk[e.AggregateID], e)
	}
	if err := rd.sc.Err(); err != nil {
		return chunk, order, fmt.Errorf("import: after line %d: %w", rd.line, err)
	}
	return chunk, order, nil
}

// storeKeys stores the key lines rd read, creating each key unless the
// target has the subject's (a re-run of an import stores them again:
// Create keeps the first).
func (im *importer) storeKeys(ctx context.Context, rd *reader) error {
	if len(rd.keys) == 0 {
		return nil
	}
	if im.opt.Keys == nil {
		return errors.New("import: the stream holds data keys, and the target has no key store to take them")
	}
	for _, k := range rd.keys {
		if _, err := im.opt.Keys.Create(ctx, k); err != nil && !errors.Is(err, store.ErrKeyErased) {
			return fmt.Errorf("import: data key of %s: %w", k.Subject, err)
		}
	}
	rd.nkeys += int64(len(rd.keys))
	rd.keys = rd.keys[:0]
	return nil
}

// storeClaims writes the claim lines rd read, each row as the source kept
// it (a re-run of an import writes them again: a row written twice is one
// row).
func (im *importer) storeClaims(ctx context.Context, rd *reader) error {
	if len(rd.claims) == 0 {
		return nil
	}
	if im.opt.Claims == nil {
		return errors.New("import: the stream holds e-mail claims, and the target has no claim store to take them")
	}
	for _, c := range rd.claims {
		row := store.ClaimRow{Attempt: c.Attempt, Customer: c.Customer, Since: c.Since, At: c.At.UTC()}
		if _, err := im.opt.Claims.Claim(ctx, c.Key, row); err != nil {
			return fmt.Errorf("import: e-mail claim %s of %s: %w", c.Attempt, c.Customer, err)
		}
	}
	rd.nclaims += int64(len(rd.claims))
	rd.claims = rd.claims[:0]
	return nil
}

type importer struct {
	dst Target
	opt Options
	n   *Counter

	mu       sync.Mutex
	versions map[uuid.UUID]int64 // the version dst holds, of each aggregate seen
}

// chunk appends a chunk's aggregates, Concurrency at a time, then marks
// them handled for the Published consumers.
func (im *importer) chunk(ctx context.Context, chunk map[uuid.UUID][]store.Event, order []uuid.UUID) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(im.opt.Concurrency)
	for _, id := range order {
		g.Go(func() error { return im.aggregate(gctx, id, chunk[id]) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if len(im.opt.Published) == 0 {
		return nil
	}
	marks := make(map[uuid.UUID]int64, len(order))
	im.mu.Lock()
	for _, id := range order {
		marks[id] = im.versions[id]
	}
	im.mu.Unlock()
	for _, c := range im.opt.Published {
		if err := im.opt.Marker.MarkHandled(ctx, c, marks); err != nil {
			return fmt.Errorf("import: mark %s's progress: %w", c, err)
		}
	}
	return nil
}

// aggregate appends one aggregate's events of a chunk, skipping those dst
// holds already.
func (im *importer) aggregate(ctx context.Context, id uuid.UUID, evs []store.Event) error {
	im.mu.Lock()
	v, seen := im.versions[id]
	im.mu.Unlock()
	if !seen {
		typ, cur, err := im.dst.Version(ctx, id)
		if err != nil {
			return fmt.Errorf("import: version of %s: %w", id, err)
		}
		if cur > 0 && typ != evs[0].AggregateType {
			return fmt.Errorf("import: aggregate %s is a %s in the store, a %s in the stream", id, typ, evs[0].AggregateType)
		}
		v = cur
	}
	skip := 0
	for skip < len(evs) && evs[skip].Sequence <= v {
		skip++
	}
	im.n.add(0, int64(skip))
	evs = evs[skip:]
	for len(evs) > 0 {
		if evs[0].Sequence != v+1 {
			return fmt.Errorf("import: aggregate %s is at version %d, the stream's next event is %d: a gap", id, v, evs[0].Sequence)
		}
		k := min(len(evs), maxAppend)
		if err := im.dst.Append(ctx, id, v, evs[:k]); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return fmt.Errorf("import: %s changed while it was imported (is something else writing to the store?): %w", id, err)
			}
			return fmt.Errorf("import: append to %s: %w", id, err)
		}
		v += int64(k)
		im.n.add(int64(k), 0)
		evs = evs[k:]
	}
	im.mu.Lock()
	im.versions[id] = v
	im.mu.Unlock()
	return nil
}
