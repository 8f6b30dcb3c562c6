package api

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.uber.org/zap"

	"github.com/orderd/orderd"
)

// TestRootRedirectsToConsole: a browser sent to / lands on the console (GET
// and HEAD: 302 to /console); / takes no other method; without the console
// / is no route.
func TestRootRedirectsToConsole(t *testing.T) {
	console := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "console at "+r.URL.Path)
	})
	srv := httptest.NewServer(New(nil, nil, nil, nil, orderd.OpenAPI, zap.NewNop()).WithConsole(console).Handler())
	t.Cleanup(srv.Close)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	send := func(c *http.Client, method, url string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	for _, method := range []string{"GET", "HEAD"} {
		resp, body := send(noFollow, method, srv.URL+"/")
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/console" {
			t.Errorf("%s /: %d, Location %q, want 302 to /console", method, resp.StatusCode, resp.Header.Get("Location"))
		}
		if method == "HEAD" && body != "" {
			t.Errorf("HEAD /: body %q", body)
		}
	}
	if resp, body := send(http.DefaultClient, "GET", srv.URL+"/"); resp.StatusCode != http.StatusOK || body != "console at /console" {
		t.Errorf("GET / followed: %d %q, want the console", resp.StatusCode, body)
	}
	if resp, _ := send(noFollow, "OPTIONS", srv.URL+"/"); resp.StatusCode != http.StatusNoContent || resp.Header.Get("Allow") != "GET, HEAD, OPTIONS" {
		t.Errorf("OPTIONS /: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	if resp, _ := send(noFollow, "POST", srv.URL+"/"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d, want 405", resp.StatusCode)
	}

	bare := httptest.NewServer(New(nil, nil, nil, nil, orderd.OpenAPI, zap.NewNop()).Handler())
	t.Cleanup(bare.Close)
	resp, body := send(noFollow, "GET", bare.URL+"/")
	var p struct{ Code string }
	if resp.StatusCode != http.StatusNotFound || json.Unmarshal([]byte(body), &p) != nil || p.Code != "not_found" {
		t.Errorf("GET / without the console: %d %s, want the 404 problem", resp.StatusCode, body)
	}
}
