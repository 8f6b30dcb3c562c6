package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/store"
)

// EventLog is the event store in its global commit order, the part of it
// GET /v1/events/stream reads. The SQLite store has one; a CQL store,
// partitioned by aggregate, has none, and the stream is not offered there.
type EventLog interface {
	// ReadFeed returns up to limit events with a position above after, in
	// position order, upcast; when there are none it blocks until there
	// are, or ctx ends.
	ReadFeed(ctx context.Context, after int64, limit int) ([]store.Event, error)
	// Head returns the newest committed position, 0 for an empty store.
	Head(ctx context.Context) (int64, error)
}

// StreamOptions tune GET /v1/events/stream. Zero values take the defaults.
type StreamOptions struct {
	// MaxClients caps the streams open at once (default 1000); the next
	// one is answered 503 too_many_streams.
	MaxClients int
	// Buffer is how many of the hub's batches a client may have waiting
	// unsent (default 64). A client whose buffer is full is dropped, so
	// one slow reader never holds the others, or the commands, back.
	Buffer int
	// Batch is the most events read from the store at once (default 256).
	Batch int
	// Linger is the least time between two reads of the hub (default
	// 20 ms): under load, the events of many commits go out as one batch,
	// one write per client, rather than a write per commit. An event
	// after a quiet spell goes out at once.
	Linger time.Duration
	// Heartbeat is the pause after which an idle stream sends a comment,
	// so proxies keep it open and clients notice a dead one (default 15 s).
	Heartbeat time.Duration
	// WriteTimeout is the longest one write to a client may take (default
	// 10 s); a client that takes longer is disconnected.
	WriteTimeout time.Duration
}

// Stream serves GET /v1/events/stream: Server-Sent Events of every
// published event, by position. One hub goroutine tails the store while at
// least one client is live and hands each batch, encoded once, to every
// client's bounded buffer; a client that starts behind the hub reads the
// store itself until it reaches the hub. Create it with NewStream, hand it
// to Server.WithStream, and call Stop when the HTTP server shuts down.
type Stream struct {
	log  EventLog // nil: the backend offers no global order
	opts StreamOptions

	ctx  context.Context // ends at Stop
	stop context.CancelFunc

	open    atomic.Int64 // streams admitted and not yet ended
	dropped atomic.Int64 // clients dropped for being slow, counted by eventStream

	mu     sync.Mutex
	subs   map[*subscriber]struct{} // the clients the hub feeds
	pos    int64                    // the hub has handed out every event up to here
	gen    int                      // the hub's generation, bumped at each start and stop
	halt   context.CancelFunc       // stops the running hub; nil when none runs
	logger *zap.Logger
}

// errSlow ends a client whose buffer overflowed.
var errSlow = errors.New("stream client too slow: its buffer is full")

// NewStream returns the stream of log, whose series (orderd_stream_clients,
// orderd_stream_clients_dropped_total) are registered in reg when not nil.
// A nil log makes GET /v1/events/stream answer 501 stream_not_offered.
func NewStream(log EventLog, opts StreamOptions, reg prometheus.Registerer, logger *zap.Logger) *Stream {
	opts.MaxClients = orDefault(opts.MaxClients, 1000)
	opts.Buffer = orDefault(opts.Buffer, 64)
	opts.Batch = orDefault(opts.Batch, 256)
	opts.Linger = orDefault(opts.Linger, 20*time.Millisecond)
	opts.Heartbeat = orDefault(opts.Heartbeat, 15*time.Second)
	opts.WriteTimeout = orDefault(opts.WriteTimeout, 10*time.Second)
	if logger == nil {
		logger = zap.NewNop()
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &Stream{log: log, opts: opts, ctx: ctx, stop: stop, subs: map[*subscriber]struct{}{}, logger: logger}
	if reg != nil {
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "orderd_stream_clients",
				Help: "Clients of GET /v1/events/stream connected now.",
			}, func() float64 { return float64(s.Clients()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "orderd_stream_clients_dropped_total",
				Help: "Clients of GET /v1/events/stream disconnected because they read too slowly (their buffer was full, or one write took longer than the write timeout).",
			}, func() float64 { return float64(s.Dropped()) }),
		)
	}
	return s
}

// orDefault returns v, or def when v is not positive.
func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Clients returns how many streams are open.
func (s *Stream) Clients() int { return int(s.open.Load()) }

// Dropped returns how many clients were dropped for reading too slowly:
// the hub's, whose buffer overflowed, and those whose write timed out,
// live or still catching up from the store.
func (s *Stream) Dropped() int64 { return s.dropped.Load() }

// Stop ends every stream and refuses none afterwards: a stream asked for
// after Stop ends at once, with no event. Register it with
// http.Server.RegisterOnShutdown, or Shutdown waits for the streams, which
// never end by themselves, until its deadline.
func (s *Stream) Stop() {
	s.stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopHubLocked()
}

// admit counts a new stream, unless MaxClients are open.
func (s *Stream) admit() bool {
	if s.open.Add(1) > int64(s.opts.MaxClients) {
		s.open.Add(-1)
		return false
	}
	return true
}

func (s *Stream) leave() { s.open.Add(-1) }

// subscriber is one client as the hub sees it.
type subscriber struct {
	ch chan *batch
	rc *http.ResponseController

	mu   sync.Mutex
	why  error         // why the hub dropped it; set once
	gone chan struct{} // closed when why is set
}

func newSubscriber(buffer int, rc *http.ResponseController) *subscriber {
	return &subscriber{ch: make(chan *batch, buffer), rc: rc, gone: make(chan struct{})}
}

// end drops the client: its next write fails, and so does the one it may
// be blocked in now, which ends its connection.
func (sub *subscriber) end(why error) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.why != nil {
		return
	}
	sub.why = why
	close(sub.gone)
	_ = sub.rc.SetWriteDeadline(time.Now())
}

// slow reports whether the client's stream, ended by err, was dropped for
// reading too slowly: by the hub, or by a write that timed out. A client
// still catching up from the store is not the hub's and can only time
// out. The end of the hub is not the client's fault, though it ends the
// client's write with a timeout too.
func (sub *subscriber) slow(err error) bool {
	sub.mu.Lock()
	why := sub.why
	sub.mu.Unlock()
	if why != nil {
		return errors.Is(why, errSlow)
	}
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// extend gives the client's next write until d, unless it was dropped.
func (sub *subscriber) extend(d time.Duration) error {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.why != nil {
		return sub.why
	}
	if err := sub.rc.SetWriteDeadline(time.Now().Add(d)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

// join hands sub to the hub, starting the hub when none runs, and returns
// the hub's position: the hub will hand sub every event after it, and
// nothing up to it.
func (s *Stream) join(ctx context.Context, sub *subscriber) (int64, error) {
	s.mu.Lock()
	if s.halt != nil {
		s.subs[sub] = struct{}{}
		defer s.mu.Unlock()
		return s.pos, nil
	}
	s.mu.Unlock()
	head, err := s.log.Head(ctx)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return 0, s.ctx.Err()
	}
	if s.halt == nil { // nobody started it meanwhile
		var hctx context.Context
		hctx, s.halt = context.WithCancel(s.ctx)
		s.gen++
		s.pos = head
		go s.tail(hctx, s.gen, head)
	}
	s.subs[sub] = struct{}{}
	return s.pos, nil
}

// unsubscribe takes sub from the hub; the hub stops with its last client.
func (s *Stream) unsubscribe(sub *subscriber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.subs, sub)
	if len(s.subs) == 0 {
		s.stopHubLocked()
	}
}

func (s *Stream) stopHubLocked() {
	if s.halt != nil {
		s.halt()
		s.halt = nil
		s.gen++
	}
}

// tail is the hub: it reads the store after from, encodes each batch once
// and offers it to every client without ever waiting for one. It ends when
// its generation is over (its last client left, or Stop), or when the
// store fails; then every client is ended, to reconnect with Last-Event-ID.
func (s *Stream) tail(ctx context.Context, gen int, from int64) {
	after := from
	linger := time.NewTimer(0)
	defer linger.Stop()
	for {
		select {
		case <-linger.C:
		case <-ctx.Done():
			return
		}
		evs, err := s.log.ReadFeed(ctx, after, s.opts.Batch)
		linger.Reset(s.opts.Linger)
		if err == nil && len(evs) == 0 {
			err = errors.New("the store's feed returned no events")
		}
		var b *batch
		if err == nil {
			b, err = encodeBatch(evs)
		}
		s.mu.Lock()
		if s.gen != gen {
			s.mu.Unlock()
			return
		}
		if err != nil {
			s.logger.Error("event stream: the hub stopped; its clients are disconnected", zap.Error(err))
			for sub := range s.subs {
				sub.end(fmt.Errorf("the hub stopped: %w", err))
			}
			clear(s.subs)
			s.stopHubLocked()
			s.mu.Unlock()
			return
		}
		after = evs[len(evs)-1].Position
		s.pos = after
		if len(b.pos) > 0 {
			for sub := range s.subs {
				select {
				case sub.ch <- b:
				default:
					delete(s.subs, sub)
					sub.end(errSlow) // counted as it ends: see slow
				}
			}
		}
		s.mu.Unlock()
	}
}

// batch is events as SSE messages, ready to write: encoded once by the
// hub for all its clients, and written to each in one piece.
type batch struct {
	msg    []byte  // the messages, back to back
	pos    []int64 // each message's position, increasing
	starts []int   // where each message starts in msg
}

// after returns the messages of the events after position last.
func (b *batch) after(last int64) []byte {
	i, _ := slices.BinarySearch(b.pos, last+1)
	if i == len(b.pos) {
		return nil
	}
	return b.msg[b.starts[i]:]
}

// streamEventJSON is an event as the stream's data shows it: its envelope
// as GET /v1/orders/{id}/events does, and its position.
type streamEventJSON struct {
	eventJSON
	Position int64 `json:"position"`
}

// published are the aggregate types whose events the stream shows: the
// relay's (email claims are bookkeeping).
var published = aggregate.PublishedTypes()

// encodeBatch returns the SSE messages of the published events of evs.
func encodeBatch(evs []store.Event) (*batch, error) {
	b := &batch{}
	for _, e := range evs {
		if !slices.Contains(published, e.AggregateType) {
			continue
		}
		data, err := json.Marshal(streamEventJSON{envelopeOut(e), e.Position})
		if err != nil {
			return nil, fmt.Errorf("encode event at %d: %w", e.Position, err)
		}
		b.pos, b.starts = append(b.pos, e.Position), append(b.starts, len(b.msg))
		b.msg = append(b.msg, "id: "...)
		b.msg = strconv.AppendInt(b.msg, e.Position, 10)
		b.msg = append(b.msg, "\nevent: "...)
		b.msg = append(b.msg, e.Type...)
		b.msg = append(b.msg, "\ndata: "...)
		b.msg = append(b.msg, data...)
		b.msg = append(b.msg, "\n\n"...)
	}
	return b, nil
}
