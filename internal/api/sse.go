package api

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
)

// WithStream serves GET /v1/events/stream from st. Without it (or with a
// stream of no EventLog) the route answers 501 stream_not_offered.
func (s *Server) WithStream(st *Stream) *Server {
	s.stream = st
	return s
}

// eventStream answers GET /v1/events/stream: every published event after
// the position the client names, as Server-Sent Events whose id is the
// position, first from the store, then live as events are committed.
func (s *Server) eventStream(w http.ResponseWriter, r *http.Request) error {
	st := s.stream
	if st == nil || st.log == nil {
		return &aggregate.Error{Kind: errStreamNotOffered, Code: "stream_not_offered",
			Detail: "this event store has no global commit order (the CQL backend keeps each aggregate's events apart), so it offers no stream of all events; consume the Kafka topics, or read one aggregate's events at /v1/orders/{id}/events"}
	}
	after, fromNow, err := streamAfter(r)
	if err != nil {
		return err
	}
	if err := st.checkStart(r, after); err != nil {
		return err
	}
	if !st.admit() {
		return &aggregate.Error{Kind: errTooManyStreams, Code: "too_many_streams",
			Detail: fmt.Sprintf("%d event streams are open, the most this server serves at once; retry later", st.opts.MaxClients)}
	}
	defer st.leave()
	if fromNow {
		if after, err = st.log.Head(r.Context()); err != nil {
			return err
		}
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx would hold the events back otherwise
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return nil
	}
	rc := http.NewResponseController(w)
	// The server's ReadTimeout would end the request's context mid-stream
	// (its background read of the idle connection times out); the stream
	// reads nothing more, and notices a client gone by its EOF.
	_ = rc.SetReadDeadline(time.Time{})
	c := &sseConn{w: w, rc: rc, st: st, last: after, mark: fromNow, sub: newSubscriber(st.opts.Buffer, rc)}
	w.WriteHeader(http.StatusOK)
	// Past this point the answer is under way: an error can only end it.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(st.ctx, cancel)()
	err = c.serve(ctx)
	slow := c.sub.slow(err)
	if slow {
		st.dropped.Add(1)
	}
	switch {
	case err == nil, ctx.Err() != nil, slow:
		logger(r.Context()).Debug("event stream ended", zap.Error(err), zap.Int64("last", c.last))
	default:
		logger(r.Context()).Warn("event stream failed", zap.Error(err), zap.Int64("last", c.last))
	}
	return nil
}

// checkStart refuses a start position beyond the head: no event has it
// yet, so it can only be a mistake (a position of another store, or of
// this one before a restore), and the client would wait in silence for
// events it then never gets. The problem names the head.
func (st *Stream) checkStart(r *http.Request, after int64) error {
	if after == 0 {
		return nil
	}
	head, err := st.log.Head(r.Context())
	if err != nil || after <= head {
		return err
	}
	field := "after"
	if len(r.Header.Values("Last-Event-ID")) > 0 {
		field = "Last-Event-ID"
	}
	return &beyondHead{head: head, err: &aggregate.Error{Kind: aggregate.ErrInvalid, Code: "position_beyond_head", Field: field,
		Detail: fmt.Sprintf("position %d is beyond the newest event, at %d: start at a position up to it, or with after=now", after, head)}}
}

// beyondHead is the refusal of a start position beyond the head, whose
// problem carries the head (the extension member "head").
type beyondHead struct {
	err  *aggregate.Error
	head int64
}

func (e *beyondHead) Error() string { return e.err.Error() }
func (e *beyondHead) Unwrap() error { return e.err }

// streamAfter returns the position a stream starts after: Last-Event-ID,
// which a reconnecting EventSource sends to the URL it first asked (with
// its original ?after), wins over ?after; both must be positions, or
// ?after=now, which asks for the head (fromNow: the caller reads it).
func streamAfter(r *http.Request) (after int64, fromNow bool, err error) {
	if v, ok, _ := query(r, "after"); ok && v == "now" {
		fromNow = true
	} else if after, err = queryInt(r, "after", 0, math.MaxInt64, 0, "a feed position (a whole number of 0 or more) or now"); err != nil {
		return 0, false, err
	}
	vals := r.Header.Values("Last-Event-ID")
	if len(vals) == 0 {
		return after, fromNow, nil
	}
	n, err := strconv.ParseInt(vals[0], 10, 64)
	if len(vals) > 1 || err != nil || n < 0 || vals[0] != strconv.FormatInt(n, 10) {
		return 0, false, invalid("invalid_last_event_id", "Last-Event-ID",
			"Last-Event-ID must be one event id of this stream, a whole number of 0 or more, not %s", echo(vals[0]))
	}
	return n, false, nil
}

// sseConn is one client's stream.
type sseConn struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	st   *Stream
	sub  *subscriber
	last int64 // the position of the last event written, or the start
	// mark: the stream started at the head (?after=now), which it names
	// first in an id without data: an EventSource takes it as its last
	// event id, so a reconnection before any event resumes there.
	mark bool
}

// serve catches up from the store, joins the hub, closes the gap between
// the two from the store, then writes the hub's batches as they come. It
// returns when ctx ends (the client went, or Stop), or the client is
// dropped or a write fails.
func (c *sseConn) serve(ctx context.Context) error {
	if err := c.flush(); err != nil { // the headers, at once
		return err
	}
	if c.mark {
		if err := c.send([]byte("id: " + strconv.FormatInt(c.last, 10) + "\n\n")); err != nil {
			return err
		}
	}
	head, err := c.st.log.Head(ctx)
	if err != nil {
		return err
	}
	// Most of a long catch-up happens before joining, so that the hub's
	// batches do not pile up in the buffer meanwhile.
	if err := c.catchUp(ctx, head); err != nil {
		return err
	}
	joined, err := c.st.join(ctx, c.sub)
	if err != nil {
		return err
	}
	defer c.st.unsubscribe(c.sub)
	// The hub hands over every event after joined; what lies between the
	// last event written and joined comes from the store.
	if err := c.catchUp(ctx, joined); err != nil {
		return err
	}
	beat := time.NewTicker(c.st.opts.Heartbeat)
	defer beat.Stop()
	for {
		select {
		case b := <-c.sub.ch:
			if err := c.write(b); err != nil {
				return err
			}
			beat.Reset(c.st.opts.Heartbeat)
		case <-beat.C:
			if err := c.send([]byte(": ping\n\n")); err != nil {
				return err
			}
		case <-c.sub.gone:
			return c.sub.why
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// catchUp writes the events after c.last up to position to from the
// store. ReadFeed never blocks here: to is a committed position.
func (c *sseConn) catchUp(ctx context.Context, to int64) error {
	for c.last < to {
		evs, err := c.st.log.ReadFeed(ctx, c.last, c.st.opts.Batch)
		if err != nil {
			return err
		}
		b, err := encodeBatch(evs)
		if err != nil {
			return err
		}
		if err := c.write(b); err != nil {
			return err
		}
		c.last = max(c.last, evs[len(evs)-1].Position) // past events not shown too
	}
	return nil
}

// write writes the events of b after c.last (those up to it were
// written from the store already) in one piece, and flushes them.
func (c *sseConn) write(b *batch) error {
	msg := b.after(c.last)
	if len(msg) == 0 {
		return nil
	}
	if err := c.sub.extend(c.st.opts.WriteTimeout); err != nil {
		return err
	}
	if _, err := c.w.Write(msg); err != nil {
		return err
	}
	c.last = b.pos[len(b.pos)-1]
	return c.rc.Flush()
}

// send writes p (a comment) and flushes it.
func (c *sseConn) send(p []byte) error {
	if err := c.sub.extend(c.st.opts.WriteTimeout); err != nil {
		return err
	}
	if _, err := c.w.Write(p); err != nil {
		return err
	}
	return c.rc.Flush()
}

func (c *sseConn) flush() error {
	if err := c.sub.extend(c.st.opts.WriteTimeout); err != nil {
		return err
	}
	return c.rc.Flush()
}
