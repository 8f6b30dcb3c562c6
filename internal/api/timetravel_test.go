package api

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

// TestAsOfBeforeCreation: as_of before the aggregate's first event is 404
// whatever the time, the earliest one RFC 3339 can write included (which
// is Go's zero time, and was once taken for an absent as_of: 200 with
// today's state); the creation time itself is the first version.
func TestAsOfBeforeCreation(t *testing.T) {
	s := newStreamed(t, StreamOptions{}, nil)
	id := s.register(t)
	path := s.base + "/v1/customers/" + id.String()
	for _, at := range []string{"0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000000001Z", "0001-01-01T00:00:00+01:00", "1970-01-01T00:00:00Z", "2000-01-01T00:00:00Z"} {
		p := problemAt(t, path+"?as_of="+url.QueryEscape(at), http.StatusNotFound)
		if p.Code != "customer_not_found" || p.Field != "as_of" {
			t.Errorf("as_of=%s: %s (%s), want customer_not_found (as_of)", at, p.Code, p.Field)
		}
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	resp, err := s.http.Get(path + "?as_of=" + url.QueryEscape(now))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") != `"1"` {
		t.Errorf("as_of=%s: %d ETag %s, want 200 \"1\"", now, resp.StatusCode, resp.Header.Get("ETag"))
	}
}
