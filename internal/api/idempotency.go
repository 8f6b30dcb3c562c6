package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-json-experiment/json"
	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/telemetry"
)

// Defaults of IdempotencyOptions.
const (
	// DefaultIdempotencyTTL is how long a key's record is kept: a retry
	// within it is answered from the record.
	DefaultIdempotencyTTL = 24 * time.Hour
	// DefaultIdempotencyWait is how long a retry waits for the first
	// attempt of its key to finish before it is answered 409.
	DefaultIdempotencyWait = 2 * time.Second
	// DefaultIdempotencyTakeover is how long a pending record may go
	// unchanged before its attempt is taken for dead and the next retry
	// settles it. Attempts run under a deadline of half of it, so a live
	// one has finished long before.
	DefaultIdempotencyTakeover = 30 * time.Second
)

// The metadata entries every event of a keyed command carries, in the same
// write as the event: the client's key, and the id of the key's record,
// which is what settles a record whose attempt died.
const (
	metaIdempotencyKey    = store.MetaIdempotencyKey
	metaIdempotencyRecord = store.MetaIdempotencyRecord
)

// The kinds of error of idempotency keys.
var (
	errKeyReused   = errors.New("idempotency key reused")
	errKeyInFlight = errors.New("idempotency key in flight")
)

// IdempotencyOptions tune NewIdempotency. The zero value is usable.
type IdempotencyOptions struct {
	// TTL is how long a key's record is kept [DefaultIdempotencyTTL].
	TTL time.Duration
	// Wait bounds how long a retry waits for the first attempt of its key
	// [DefaultIdempotencyWait].
	Wait time.Duration
	// Takeover is how long a pending record may go unchanged before the
	// next retry settles it [DefaultIdempotencyTakeover].
	Takeover time.Duration
	// Poll is how often a waiting retry looks at a record an attempt of
	// another process runs [50ms]; attempts of this process wake it at
	// once.
	Poll time.Duration
	// Now is the clock [time.Now].
	Now func() time.Time
	// Instance is this process's instance name, which no two live
	// processes share (the name the workers' leases hold). A record left
	// pending by an earlier boot of the same instance is settled at once,
	// without waiting for Takeover: its attempt died with that boot. Empty:
	// only Takeover tells a dead attempt.
	Instance string
}

// Idempotency is the middleware of the Idempotency-Key header (the IETF
// httpapi draft) on command routes. It is safe for concurrent use.
//
// The first request with a key runs and its answer is kept (2xx and 4xx
// alike, so a refusal is answered the same again); a retry with the same
// key, method, path and body gets that answer byte for byte with
// Idempotent-Replayed: true, and runs nothing. The same key with another
// request is refused (422 idempotency_key_reused); a retry while the first
// attempt still runs waits up to Wait for its answer, then gets 409
// idempotency_key_in_flight with Retry-After. A 5xx (or a panic, or a
// client gone) keeps nothing: the next retry runs the command again,
// unless the command's events show that it committed. So does a retry
// that finds the record of an attempt that died: once the record has not
// changed for Takeover, or at once when the attempt was of an earlier boot
// of this instance (see diedBefore; the SQLite key store reports every
// record left pending by an earlier process as abandoned). A command that
// appended events keeps no answer of its own: its events are the answer,
// and a retry rebuilds it from them (see run).
type Idempotency struct {
	keys    store.Idempotency
	history store.Loader
	opts    IdempotencyOptions
	process store.Process // this boot of opts.Instance, written into the records its attempts own

	mu      sync.Mutex
	running map[string]chan struct{} // keys whose attempt runs in this process; closed when it ends
}

// NewIdempotency returns the middleware keeping its records in keys and
// settling a record whose attempt died from the events in history.
func NewIdempotency(keys store.Idempotency, history store.Loader, opts IdempotencyOptions) *Idempotency {
	if opts.TTL <= 0 {
		opts.TTL = DefaultIdempotencyTTL
	}
	if opts.Wait <= 0 {
		opts.Wait = DefaultIdempotencyWait
	}
	if opts.Takeover <= 0 {
		opts.Takeover = DefaultIdempotencyTakeover
	}
	if opts.Poll <= 0 {
		opts.Poll = 50 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Idempotency{keys: keys, history: history, opts: opts, running: map[string]chan struct{}{},
		process: store.Process{Instance: opts.Instance, Boot: uuid.New()}}
}

// Middleware wraps a command route. Requests without the header pass
// through unchanged.
func (m *Idempotency) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, present, err := idempotencyKey(r.Header)
		switch {
		case !present:
			next.ServeHTTP(w, r)
			return
		case err != nil:
			writeError(w, r, err)
			return
		}
		if r.ContentLength > maxBody {
			next.ServeHTTP(w, r) // refused as too large: nothing to run twice
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), r.Body), r.Body}
		if err != nil || len(body) > maxBody {
			next.ServeHTTP(w, r) // the handler answers the broken or too large body
			return
		}
		m.serve(w, r, next, key, fingerprint(r.Method, r.URL.Path, body), body)
	})
}

// idempotencyKey reads the Idempotency-Key header. The draft makes it a
// structured-field string ("…", with \" and \\ escapes); a bare token is
// taken as it is, as most clients send it. The key must be 1 to 255
// printable ASCII characters.
func idempotencyKey(h http.Header) (key string, present bool, err error) {
	vals := h.Values("Idempotency-Key")
	if len(vals) == 0 {
		return "", false, nil
	}
	refuse := func(why string) (string, bool, error) {
		return "", true, invalid("invalid_idempotency_key", "Idempotency-Key", "%s", why)
	}
	if len(vals) > 1 {
		return refuse("send one Idempotency-Key header")
	}
	key = vals[0]
	// The draft's form is a structured-field string, in quotes; a bare
	// value, or one that does not parse as such, is taken as it is.
	if unquoted, ok := sfString(key); ok {
		key = unquoted
	}
	switch {
	case key == "":
		return refuse("the Idempotency-Key is empty")
	case len(key) > 255:
		return refuse("the Idempotency-Key is over 255 characters")
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return refuse("the Idempotency-Key must be printable ASCII")
		}
	}
	return key, true, nil
}

// sfString unquotes an RFC 8941 string.
func sfString(v string) (string, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", false
	}
	var b strings.Builder
	for i := 1; i < len(v)-1; i++ {
		switch c := v[i]; c {
		case '\\':
			i++
			if i == len(v)-1 || (v[i] != '"' && v[i] != '\\') {
				return "", false
			}
			b.WriteByte(v[i])
		case '"':
			return "", false
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}

// fingerprint identifies a request: its method, path and body.
func fingerprint(method, path string, body []byte) []byte {
	h := sha256.New()
	_, _ = io.WriteString(h, method) // "method\npath\nbody": Fprintf cost a third of this
	_, _ = h.Write([]byte{'\n'})
	_, _ = io.WriteString(h, path)
	_, _ = h.Write([]byte{'\n'})
	_, _ = h.Write(body)
	return h.Sum(make([]byte, 0, sha256.Size))
}

// serve answers a keyed request: it runs it when it is the key's first,
// replays the stored answer of a finished one (or the answer its events
// make: see run), waits for one still running, and settles one whose
// attempt died or kept no answer.
func (m *Idempotency) serve(w http.ResponseWriter, r *http.Request, next http.Handler, key string, fp, body []byte) {
	ctx := r.Context()
	now := m.opts.Now().UTC()
	rec := store.IdempotencyRecord{Key: key, ID: uuid.Must(uuid.NewV7()), Fingerprint: fp, Owner: uuid.New(), Process: m.process}
	rec.AggregateID = aggregateOf(r, body, rec.ID)
	deadline := now.Add(m.opts.Wait)
	for {
		now = m.opts.Now().UTC()
		rec.Created, rec.Updated, rec.Expires = now, now, now.Add(m.opts.TTL)
		sctx, span := telemetry.Child(ctx, "idempotency begin")
		cur, began, err := m.keys.Begin(sctx, rec)
		telemetry.End(span, err)
		if err != nil {
			writeError(w, r, fmt.Errorf("idempotency key %q: %w", key, err))
			return
		}
		if began {
			m.run(w, r, next, rec)
			return
		}
		if !bytes.Equal(cur.Fingerprint, fp) {
			writeError(w, r, &aggregate.Error{Kind: errKeyReused, Detail: "this Idempotency-Key was used with another request (method, path or body); use a new key for a new request"})
			return
		}
		if cur.State == store.Done {
			replay(w, cur.Response)
			return
		}
		if cur.State == store.Pending && cur.AggregateID != uuid.Nil {
			// An attempt whose command committed stores no answer: its
			// events are the answer. One still running has none yet.
			resp, found, err := m.committed(ctx, r, cur)
			if err != nil {
				writeError(w, r, fmt.Errorf("idempotency key %q: %w", key, err))
				return
			}
			if found {
				replay(w, resp)
				return
			}
		}
		if cur.State == store.Abandoned || now.Sub(cur.Updated) >= m.opts.Takeover || m.diedBefore(cur) {
			taken, err := m.keys.Takeover(ctx, cur.Claim(), rec.Owner, m.process, now)
			if err != nil {
				writeError(w, r, fmt.Errorf("idempotency key %q: take over: %w", key, err))
				return
			}
			if taken {
				cur.Owner, cur.Process, cur.State, cur.Updated = rec.Owner, m.process, store.Pending, now
				m.settle(w, r, next, cur)
				return
			}
			continue // another retry took it first: see what it does
		}
		if !m.wait(ctx, key, deadline) {
			if ctx.Err() != nil {
				writeError(w, r, ctx.Err())
				return
			}
			writeError(w, r, &aggregate.Error{Kind: errKeyInFlight, Detail: "a request with this Idempotency-Key is still being processed; retry shortly"})
			return
		}
	}
}

// diedBefore reports whether rec is pending for an attempt of an earlier
// boot of this instance: that attempt died with its process, since no two
// live processes share an instance name. Its record can be settled at
// once; settling looks for its id in the events before running anything
// again, so a command that committed is never run twice.
func (m *Idempotency) diedBefore(rec store.IdempotencyRecord) bool {
	p := rec.Process
	return rec.State == store.Pending && m.process.Instance != "" &&
		p.Instance == m.process.Instance && p.Boot != m.process.Boot
}

// wait waits until the attempt of key running in this process ends, or
// for one poll interval when none does, and reports whether time is left
// before deadline.
func (m *Idempotency) wait(ctx context.Context, key string, deadline time.Time) bool {
	left := deadline.Sub(m.opts.Now())
	if left <= 0 {
		return false
	}
	m.mu.Lock()
	done := m.running[key]
	m.mu.Unlock()
	t := time.NewTimer(min(left, m.opts.Poll))
	defer t.Stop()
	select {
	case <-done: // nil when none runs here: only the timer or ctx
	case <-t.C:
	case <-ctx.Done():
		return false
	}
	return true
}

// settle finishes a record taken over from an attempt that died or kept no
// answer: when the events of its aggregate carry the record's id, the
// command committed and its answer is rebuilt from them (and stored, so
// that the next retry reads no events); otherwise the command runs again.
func (m *Idempotency) settle(w http.ResponseWriter, r *http.Request, next http.Handler, rec store.IdempotencyRecord) {
	resp, found, err := m.committed(r.Context(), r, rec)
	switch {
	case err != nil:
		m.abandon(r, rec)
		writeError(w, r, fmt.Errorf("idempotency key %q: %w", rec.Key, err))
	case found:
		m.complete(r, rec, resp)
		replay(w, resp)
	default:
		m.run(w, r, next, rec)
	}
}

// committed looks for the events of rec's command among the events of the
// aggregate it names, and when they are there (it committed) returns the
// answer they make.
func (m *Idempotency) committed(ctx context.Context, r *http.Request, rec store.IdempotencyRecord) (store.IdempotentResponse, bool, error) {
	if rec.AggregateID == uuid.Nil {
		return store.IdempotentResponse{}, false, nil
	}
	evs, err := m.history.Load(ctx, rec.AggregateID, 0)
	if err != nil {
		return store.IdempotentResponse{}, false, fmt.Errorf("load %s: %w", rec.AggregateID, err)
	}
	var first, last int64
	for _, e := range evs {
		if e.Metadata[metaIdempotencyRecord] == rec.ID.String() {
			if first == 0 {
				first = e.Sequence
			}
			last = e.Sequence
		}
	}
	if last == 0 {
		return store.IdempotentResponse{}, false, nil
	}
	return commandAnswer(r, rec.AggregateID, first, last), true, nil
}

// aggregateOf is the aggregate the command of a keyed request will act
// on, found as its handler finds it, before it runs: the {id} of its
// route; for a create, the id its body gives, or else fresh, which the
// handler then takes (see newID). uuid.Nil when the request names an id
// that its handler refuses. attachIdempotencyKey checks that the handler
// agrees. The body is read as decode reads it (names matched exactly),
// other members skipped.
func aggregateOf(r *http.Request, body []byte, fresh uuid.UUID) uuid.UUID {
	if chi.URLParam(r, "id") != "" {
		id, err := pathID(r)
		if err != nil {
			return uuid.Nil
		}
		return id
	}
	var req struct {
		ID *string `json:"id"`
	}
	if json.Unmarshal(body, &req) != nil {
		return uuid.Nil
	}
	if req.ID == nil {
		return fresh
	}
	id, err := parseUUID(*req.ID, "/id")
	if err != nil {
		return uuid.Nil
	}
	return id
}

// commandAnswer rebuilds the answer of a command whose events are first…
// last of aggregate id, as the command handlers write it: 201 with a
// Location for a create (its events start the aggregate), 200 otherwise.
func commandAnswer(r *http.Request, id uuid.UUID, first, last int64) store.IdempotentResponse {
	rw := &bufferedWriter{header: http.Header{}}
	status := http.StatusOK
	if first == 1 {
		status = http.StatusCreated
		rw.header.Set("Location", strings.TrimSuffix(r.URL.Path, "/")+"/"+id.String())
	}
	_ = writeCommandResult(rw, status, id, last) // writes into memory
	return rw.response()
}

// attempt is the run of a keyed request, as the command handlers see it.
type attempt struct {
	rec store.IdempotencyRecord

	mu          sync.Mutex
	first, last int64 // the events the command appended to rec.AggregateID; 0 when none
}

type attemptKey struct{}

// appended is the attempt's aggregate.WithAppendNote.
func (a *attempt) appended(id uuid.UUID, first, last int64) {
	if id != a.rec.AggregateID {
		return // another stream the command writes, such as an e-mail claim
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.first == 0 {
		a.first = first
	}
	a.last = last
}

// answeredByEvents reports whether the events the attempt's command
// appended make resp, byte for byte, as committed rebuilds it: then they
// are the answer, and the record needs none stored.
func (a *attempt) answeredByEvents(r *http.Request, resp store.IdempotentResponse) bool {
	a.mu.Lock()
	first, last := a.first, a.last
	a.mu.Unlock()
	if first == 0 {
		return false
	}
	rebuilt := commandAnswer(r, a.rec.AggregateID, first, last)
	return rebuilt.Status == resp.Status && maps.Equal(rebuilt.Header, resp.Header) && bytes.Equal(rebuilt.Body, resp.Body)
}

// attachIdempotencyKey ties a keyed command to its key before the command
// appends anything: it puts the key and the record's id into md, the
// metadata every event of the command carries. The record named the
// aggregate when it began (aggregateOf); a command that acts on another
// is refused, since a retry could not find its events. A request without
// a key is left alone. Command handlers call it from meta, for creates
// and commands on existing aggregates alike, once the aggregate id is
// known.
func attachIdempotencyKey(r *http.Request, aggregateID uuid.UUID, md map[string]string) error {
	a, ok := r.Context().Value(attemptKey{}).(*attempt)
	if !ok {
		return nil
	}
	if aggregateID != a.rec.AggregateID {
		return fmt.Errorf("idempotency key %q: the command acts on %s, the key's record names %s", a.rec.Key, aggregateID, a.rec.AggregateID)
	}
	md[metaIdempotencyKey] = a.rec.Key
	md[metaIdempotencyRecord] = a.rec.ID.String()
	return nil
}

// keyedID is the id of the aggregate a keyed create makes when its body
// gives none: the one its record names (aggregateOf made it the record's
// id), which a retry that takes the record over runs with again, so that a
// create that committed conflicts rather than creating a second aggregate.
// Without a key it is false.
func keyedID(r *http.Request) (uuid.UUID, bool) {
	a, ok := r.Context().Value(attemptKey{}).(*attempt)
	if !ok {
		return uuid.Nil, false
	}
	if a.rec.AggregateID != uuid.Nil {
		return a.rec.AggregateID, true
	}
	return a.rec.ID, true
}

// run runs the request as the attempt that owns rec, keeps its answer
// (or abandons the record) and only then sends the answer, so that a retry
// after the answer always finds it.
func (m *Idempotency) run(w http.ResponseWriter, r *http.Request, next http.Handler, rec store.IdempotencyRecord) {
	done := make(chan struct{})
	m.mu.Lock()
	m.running[rec.Key] = done
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		if m.running[rec.Key] == done {
			delete(m.running, rec.Key)
		}
		m.mu.Unlock()
		close(done)
	}()

	// An attempt must end well before anyone may take its record over.
	a := &attempt{rec: rec}
	ctx, cancel := context.WithTimeout(aggregate.WithAppendNote(context.WithValue(r.Context(), attemptKey{}, a), a.appended), m.opts.Takeover/2)
	defer cancel()
	bw := &bufferedWriter{header: w.Header()}
	finished := false
	defer func() {
		if !finished { // a panic: the next retry settles it
			m.abandon(r, rec)
		}
	}()
	next.ServeHTTP(bw, r.WithContext(ctx))
	finished = true

	// A command that committed events leaves its record pending: a retry
	// finds the answer in the events (see serve), so the answer costs no
	// write of its own. Any other answer kept is stored.
	resp := bw.response()
	switch {
	case !keep(resp.Status):
		m.abandon(r, rec)
	case a.answeredByEvents(r, resp):
	default:
		m.complete(r, rec, resp)
	}
	w.WriteHeader(bw.status())
	_, _ = w.Write(bw.body.Bytes())
}

// keep says whether an answer is kept for retries: successes and refusals,
// not server failures, nor 499 (the client went away before the outcome).
func keep(status int) bool { return status < 500 && status != 499 }

func (m *Idempotency) abandon(r *http.Request, rec store.IdempotencyRecord) {
	ctx, cancel := detached(r)
	defer cancel()
	if err := m.keys.Abandon(ctx, rec.Claim(), m.opts.Now().UTC()); err != nil && !errors.Is(err, store.ErrNotOwner) {
		logger(r.Context()).Warn("idempotency key: could not abandon the record", zap.String("key", rec.Key), zap.Error(err))
	}
}

// detached is a context for the record's last write: it outlives the
// client, which may have gone.
func detached(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
}

// complete stores the answer of the attempt that owns rec. A failure is
// logged, not answered: the answer stands, and a retry settles the record
// from the events once it is taken for dead.
func (m *Idempotency) complete(r *http.Request, rec store.IdempotencyRecord, resp store.IdempotentResponse) {
	ctx, cancel := detached(r)
	defer cancel()
	ctx, span := telemetry.Child(ctx, "idempotency complete")
	err := m.keys.Complete(ctx, rec.Claim(), resp, m.opts.Now().UTC())
	telemetry.End(span, err)
	if err != nil {
		logger(r.Context()).Warn("idempotency key: could not store the answer", zap.String("key", rec.Key), zap.Error(err))
	}
}

// replay sends a stored answer.
func replay(w http.ResponseWriter, resp store.IdempotentResponse) {
	h := w.Header()
	for k, v := range resp.Header {
		h.Set(k, v)
	}
	h.Set("Idempotent-Replayed", "true")
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
}

// storedHeaders are the headers of an answer that a replay repeats.
var storedHeaders = []string{"Content-Type", "ETag", "Location"}

// bufferedWriter holds an answer until it is stored. Headers go to header
// (the real writer's, so that what outer middleware set stays).
type bufferedWriter struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (b *bufferedWriter) Header() http.Header { return b.header }

func (b *bufferedWriter) WriteHeader(code int) {
	if b.code == 0 {
		b.code = code
	}
}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	if b.code == 0 {
		b.code = http.StatusOK
	}
	return b.body.Write(p)
}

func (b *bufferedWriter) status() int {
	if b.code == 0 {
		return http.StatusOK
	}
	return b.code
}

func (b *bufferedWriter) response() store.IdempotentResponse {
	h := map[string]string{}
	for _, k := range storedHeaders {
		if v := b.header.Get(k); v != "" {
			h[k] = v
		}
	}
	return store.IdempotentResponse{Status: b.status(), Header: h, Body: bytes.Clone(b.body.Bytes())}
}
