package ledgertest

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/relay"
)

// request returns a request of op on pos.
func request(pos int64, op string, at time.Time) relay.Request {
	return relay.Request{Position: pos, ID: uuid.New(), Op: op, RequestedAt: at}
}

func testRequests(t *testing.T, l relay.Ledger) {
	c := ctx(t)
	record(t, l, Letter(3, aggA, 1, relay.Failed), Letter(5, aggA, 2, relay.Parked), Letter(9, aggB, 1, relay.Failed))
	if _, err := l.Request(c, request(4, relay.OpReplay, t0)); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("Request on an unknown letter = %v, want ErrNotFound", err)
	}
	if _, err := l.Request(c, request(3, "publish", t0)); err == nil {
		t.Error("Request with an unknown op succeeded")
	}
	nine := request(9, relay.OpDiscard, t0.Add(time.Second))
	got, err := l.Request(c, nine)
	if err != nil {
		t.Fatal(err)
	}
	nine.State, nine.RequestedAt = relay.RequestPending, nine.RequestedAt.UTC()
	if !reflect.DeepEqual(got, nine) {
		t.Errorf("Request =\n%+v\nwant\n%+v", got, nine)
	}
	three := request(3, relay.OpReplay, t0)
	if _, err := l.Request(c, three); err != nil {
		t.Fatal(err)
	}
	// A second request while one is pending gets the pending one back,
	// whatever its op.
	for _, op := range []string{relay.OpReplay, relay.OpDiscard} {
		again, err := l.Request(c, request(3, op, t0.Add(time.Minute)))
		if err != nil || again.ID != three.ID || again.Op != relay.OpReplay {
			t.Errorf("Request(%s) while a replay is pending = %+v, %v; want the pending replay", op, again, err)
		}
	}
	pending, err := l.Requests(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 2 || pending[0].ID != three.ID || pending[1].ID != nine.ID {
		t.Fatalf("Requests = %+v, want the requests on 3 and 9, in position order", pending)
	}
	if at, err := l.RequestAt(c, 9); err != nil || !reflect.DeepEqual(at, nine) {
		t.Errorf("RequestAt(9) = %+v, %v; want %+v", at, err, nine)
	}
	// A request outlives its letter: the waiter reads the outcome after a
	// replay removed what it published.
	if err := l.Remove(c, 9); err != nil {
		t.Fatal(err)
	}
	if at, err := l.RequestAt(c, 9); err != nil || at.ID != nine.ID {
		t.Errorf("RequestAt(9) after the letter went = %+v, %v", at, err)
	}
}

func testFinish(t *testing.T, l relay.Ledger) {
	c := ctx(t)
	record(t, l, Letter(3, aggA, 1, relay.Failed), Letter(5, aggB, 1, relay.Failed))
	q, err := l.Request(c, request(3, relay.OpReplay, t0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Request(c, request(5, relay.OpReplay, t0)); err != nil {
		t.Fatal(err)
	}
	notPending := q
	notPending.State = relay.RequestPending
	if err := l.Finish(c, notPending); err == nil {
		t.Error("Finish with state pending succeeded")
	}
	stranger := q
	stranger.ID, stranger.State = uuid.New(), relay.RequestDone
	if err := l.Finish(c, stranger); err != nil {
		t.Fatalf("Finish of another request: %v", err)
	}
	if at, err := l.RequestAt(c, 3); err != nil || at.State != relay.RequestPending {
		t.Fatalf("Finish of another request's id changed ours: %+v, %v", at, err)
	}
	done := q
	done.State, done.Published, done.Error, done.FinishedAt = relay.RequestFailed, 2, "kafka: too large", t0.Add(time.Minute)
	if err := l.Finish(c, done); err != nil {
		t.Fatal(err)
	}
	done.FinishedAt = done.FinishedAt.UTC()
	if at, err := l.RequestAt(c, 3); err != nil || !reflect.DeepEqual(at, done) {
		t.Errorf("RequestAt after Finish = %+v, %v; want %+v", at, err, done)
	}
	// Finishing again (a retry) changes nothing.
	again := done
	again.State, again.Published = relay.RequestDone, 7
	if err := l.Finish(c, again); err != nil {
		t.Fatal(err)
	}
	if at, _ := l.RequestAt(c, 3); at.State != relay.RequestFailed || at.Published != 2 {
		t.Errorf("a second Finish overwrote the outcome: %+v", at)
	}
	pending, err := l.Requests(c)
	if err != nil || len(pending) != 1 || pending[0].Position != 5 {
		t.Errorf("Requests after Finish = %+v, %v; want only the one on 5", pending, err)
	}
}

// testRequestReplaces asks again after a request finished: a new request
// replaces it.
func testRequestReplaces(t *testing.T, l relay.Ledger) {
	c := ctx(t)
	record(t, l, Letter(3, aggA, 1, relay.Failed))
	first, err := l.Request(c, request(3, relay.OpReplay, t0))
	if err != nil {
		t.Fatal(err)
	}
	first.State, first.Error, first.Published, first.FinishedAt = relay.RequestFailed, "too large", 1, t0.Add(time.Second)
	if err := l.Finish(c, first); err != nil {
		t.Fatal(err)
	}
	second := request(3, relay.OpDiscard, t0.Add(time.Minute))
	got, err := l.Request(c, second)
	if err != nil {
		t.Fatal(err)
	}
	second.State, second.RequestedAt = relay.RequestPending, second.RequestedAt.UTC()
	if !reflect.DeepEqual(got, second) {
		t.Errorf("Request after a finished one =\n%+v\nwant\n%+v", got, second)
	}
	if at, err := l.RequestAt(c, 3); err != nil || !reflect.DeepEqual(at, second) {
		t.Errorf("RequestAt = %+v, %v; want the new request, no outcome left", at, err)
	}
}
