package main

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"testing"

	"github.com/google/uuid"
)

// historyPage is the body of GET …/events.
type historyPage struct {
	Events           []envelope `json:"events"`
	NextAfterVersion *int64     `json:"next_after_version"`
}

var nextLinkRE = regexp.MustCompile(`^<([^>]+)>; rel="next"$`)

// nextPage returns the target of a response's Link rel="next", "" when it
// has none.
func nextPage(t testing.TB, r response) string {
	t.Helper()
	link := r.Header.Get("Link")
	if link == "" {
		return ""
	}
	m := nextLinkRE.FindStringSubmatch(link)
	if m == nil {
		t.Fatalf("Link %q is not one rel=\"next\" link", link)
	}
	return m[1]
}

// updateItems replaces an order's items n times, one event each.
func (s *service) updateItems(t testing.TB, id uuid.UUID, n int) {
	t.Helper()
	for i := range n {
		s.do(t, "PUT", "/v1/orders/"+id.String()+"/items", map[string]any{
			"items": []itemBody{{uuid.NewString(), i + 1}}}, http.StatusOK)
	}
}

// TestHistoryPages: a history is read a page at a time. Following Link
// from the first page gives every event once, in order, in pages of limit;
// the body's next_after_version agrees with Link, and is null with no Link
// on the last page; the ETag is the aggregate's version on every page; and
// a page after the last event is empty.
func TestHistoryPages(t *testing.T) {
	s := start(t, "", nil)
	cust := s.registerCustomer(t, "pages@example.com")
	o := s.createOrder(t, cust.ID)
	s.updateItems(t, o.ID, 24) // 25 events
	const version = 25

	path := "/v1/orders/" + o.ID.String() + "/events?limit=10"
	var seqs []int64
	var sizes []int
	for path != "" {
		r := s.do(t, "GET", path, nil, http.StatusOK)
		var page historyPage
		r.json(t, &page)
		sizes = append(sizes, len(page.Events))
		for _, e := range page.Events {
			seqs = append(seqs, e.Sequence)
		}
		if etag := r.Header.Get("ETag"); etag != strconv.Quote(strconv.Itoa(version)) {
			t.Errorf("GET %s: ETag %s, want the version %d", path, etag, version)
		}
		next := nextPage(t, r)
		switch {
		case next == "" && page.NextAfterVersion != nil:
			t.Errorf("GET %s: next_after_version %d without a Link", path, *page.NextAfterVersion)
		case next != "" && page.NextAfterVersion == nil:
			t.Errorf("GET %s: Link %s with a null next_after_version", path, next)
		case next != "":
			u, err := url.Parse(next)
			if err != nil {
				t.Fatal(err)
			}
			last := page.Events[len(page.Events)-1].Sequence
			if u.Path != "/v1/orders/"+o.ID.String()+"/events" || u.Query().Get("after_version") != fmt.Sprint(last) ||
				u.Query().Get("limit") != "10" || *page.NextAfterVersion != last {
				t.Errorf("GET %s: Link %s, next_after_version %d; want after_version=%d&limit=10 on this route", path, next, *page.NextAfterVersion, last)
			}
		}
		path = next
		if len(sizes) > 5 {
			t.Fatalf("still paging after %d pages: %v", len(sizes), sizes)
		}
	}
	if fmt.Sprint(sizes) != "[10 10 5]" {
		t.Errorf("page sizes %v, want [10 10 5]", sizes)
	}
	for i, seq := range seqs {
		if seq != int64(i)+1 {
			t.Fatalf("sequences %v, want 1…%d once each", seqs, version)
		}
	}

	// The default page holds them all; after the last event, an empty page.
	var page historyPage
	r := s.do(t, "GET", "/v1/orders/"+o.ID.String()+"/events", nil, http.StatusOK)
	r.json(t, &page)
	if len(page.Events) != version || page.NextAfterVersion != nil || r.Header.Get("Link") != "" {
		t.Errorf("default page: %d events, next %v, Link %q; want all %d and no next", len(page.Events), page.NextAfterVersion, r.Header.Get("Link"), version)
	}
	r = s.do(t, "GET", fmt.Sprintf("/v1/orders/%s/events?after_version=%d", o.ID, version), nil, http.StatusOK)
	page = historyPage{}
	r.json(t, &page)
	if len(page.Events) != 0 || page.NextAfterVersion != nil || r.Header.Get("Link") != "" {
		t.Errorf("page after the last event: %d events, next %v, Link %q; want none", len(page.Events), page.NextAfterVersion, r.Header.Get("Link"))
	}
	// A customer's history pages the same way.
	r = s.do(t, "GET", "/v1/customers/"+cust.ID.String()+"/events?limit=1", nil, http.StatusOK)
	page = historyPage{}
	r.json(t, &page)
	if len(page.Events) != 1 || page.Events[0].EventType != "CustomerRegistered" || page.NextAfterVersion != nil {
		t.Errorf("customer page: %+v, want its one event and no next", page)
	}
}

// TestHistoryPageBadInput: every bad limit or after_version is a 400
// invalid_query naming the parameter, and an after_version beyond the
// aggregate's version a 409 version_not_reached that says the version.
func TestHistoryPageBadInput(t *testing.T) {
	s := start(t, "", nil)
	cust := s.registerCustomer(t, "badpages@example.com")
	o := s.createOrder(t, cust.ID)
	events := "/v1/orders/" + o.ID.String() + "/events"
	for _, c := range []struct {
		query, field, detail string
	}{
		{"limit=0", "limit", "limit must be a whole number from 1 to 1000, not \"0\""},
		{"limit=1001", "limit", "limit must be a whole number from 1 to 1000, not \"1001\""},
		{"limit=-5", "limit", "limit must be a whole number from 1 to 1000, not \"-5\""},
		{"limit=2.5", "limit", "limit must be a whole number from 1 to 1000, not \"2.5\""},
		{"limit=ten", "limit", "limit must be a whole number from 1 to 1000, not \"ten\""},
		{"limit=", "limit", "limit is empty; leave it out to mean none"},
		{"limit=1&limit=2", "limit", "limit is given 2 times"},
		{"after_version=-1", "after_version", "after_version must be a whole number of 0 or more, not \"-1\""},
		{"after_version=x", "after_version", "after_version must be a whole number of 0 or more, not \"x\""},
		{"after_version=99999999999999999999", "after_version", "after_version must be a whole number of 0 or more, not \"99999999999999999999\""},
	} {
		p := s.call(t, "GET", events+"?"+c.query, nil, nil, false).problem(t)
		if p.Status != 400 || p.Code != "invalid_query" || p.Field != c.field || p.Detail != c.detail {
			t.Errorf("?%s: %d %s field %q %q; want 400 invalid_query field %q %q", c.query, p.Status, p.Code, p.Field, p.Detail, c.field, c.detail)
		}
	}
	p := s.call(t, "GET", events+"?after_version=2", nil, nil, true).problem(t)
	want := fmt.Sprintf("order %s is at version 1; after_version 2 is beyond it", o.ID)
	if p.Status != 409 || p.Code != "version_not_reached" || p.Field != "after_version" || p.Detail != want {
		t.Errorf("after_version beyond the version: %d %s field %q %q; want 409 version_not_reached %q", p.Status, p.Code, p.Field, p.Detail, want)
	}
	// An unknown id stays 404, whatever the page asked.
	p = s.call(t, "GET", "/v1/orders/"+uuid.NewString()+"/events?after_version=3&limit=5", nil, nil, true).problem(t)
	if p.Status != 404 || p.Code != "order_not_found" {
		t.Errorf("unknown order's page: %d %s, want 404 order_not_found", p.Status, p.Code)
	}
}
