package console

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func newHandler(t *testing.T) *Handler {
	t.Helper()
	h, err := New()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func get(t *testing.T, h http.Handler, method, path string, header ...string) *http.Response {
	t.Helper()
	r := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

func body(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Every path under /console that is not an asset is a page of the app:
// index.html, never cached, naming this build's assets.
func TestPagesServeIndex(t *testing.T) {
	h := newHandler(t)
	for _, path := range []string{"/console", "/console/", "/console/orders/01a214d1-0889-78c3-a78d-b3683e782127",
		"/console/customers/x", "/console/dead-letters", "/console/no/such/page"} {
		res := get(t, h, "GET", path)
		b := body(t, res)
		if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("%s: %d %s", path, res.StatusCode, res.Header.Get("Content-Type"))
		}
		if res.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("%s: Cache-Control %q", path, res.Header.Get("Cache-Control"))
		}
		if !strings.Contains(b, `src="`+h.AssetPath()+`/app.js"`) || strings.Contains(b, "{{assets}}") {
			t.Fatalf("%s: index does not name the assets under %s:\n%s", path, h.AssetPath(), b)
		}
		checkSecurityHeaders(t, path, res)
	}
}

func checkSecurityHeaders(t *testing.T, path string, res *http.Response) {
	t.Helper()
	csp := res.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("%s: Content-Security-Policy %q lacks %q", path, csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") {
		t.Errorf("%s: Content-Security-Policy %q allows unsafe sources", path, csp)
	}
	if res.Header.Get("X-Content-Type-Options") != "nosniff" || res.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("%s: nosniff %q, referrer policy %q", path, res.Header.Get("X-Content-Type-Options"), res.Header.Get("Referrer-Policy"))
	}
}

func TestAssets(t *testing.T) {
	h := newHandler(t)
	for name, ctype := range map[string]string{"app.js": "text/javascript", "dom.js": "text/javascript", "console.css": "text/css", "icon.svg": "image/svg+xml"} {
		path := h.AssetPath() + "/" + name
		res := get(t, h, "GET", path)
		b := body(t, res)
		if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), ctype) || len(b) == 0 {
			t.Fatalf("%s: %d %q, %d bytes", path, res.StatusCode, res.Header.Get("Content-Type"), len(b))
		}
		if cc := res.Header.Get("Cache-Control"); !strings.Contains(cc, "immutable") {
			t.Errorf("%s: Cache-Control %q", path, cc)
		}
		checkSecurityHeaders(t, path, res)
		etag := res.Header.Get("ETag")
		if res := get(t, h, "GET", path, "If-None-Match", etag); res.StatusCode != http.StatusNotModified || body(t, res) != "" {
			t.Errorf("%s with If-None-Match %s: %d", path, etag, res.StatusCode)
		}
		if res := get(t, h, "HEAD", path); res.StatusCode != http.StatusOK || body(t, res) != "" {
			t.Errorf("HEAD %s: %d", path, res.StatusCode)
		}
	}
	// Another build's assets, unknown files, index.html as an asset, and
	// paths that climb out are not served.
	for _, path := range []string{"/console/assets/0123456789abcdef/app.js", h.AssetPath() + "/nope.js",
		h.AssetPath() + "/index.html", h.AssetPath() + "/../console.go", h.AssetPath() + "/"} {
		if res := get(t, h, "GET", path); res.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, res.StatusCode)
		}
	}
}

func TestMethods(t *testing.T) {
	h := newHandler(t)
	res := get(t, h, "POST", "/console/orders/x")
	if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != "GET, HEAD, OPTIONS" {
		t.Fatalf("POST: %d, Allow %q", res.StatusCode, res.Header.Get("Allow"))
	}
	if res := get(t, h, "OPTIONS", "/console"); res.StatusCode != http.StatusNoContent {
		t.Fatalf("OPTIONS: %d", res.StatusCode)
	}
}

// The pages put data in the DOM as text only: no innerHTML, no inline
// handlers or styles, which the Content-Security-Policy would refuse anyway.
func TestAssetsAvoidMarkupFromData(t *testing.T) {
	entries, err := assets.ReadDir("assets")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := assets.ReadFile("assets/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", " style=", " onclick="} {
			if strings.Contains(string(b), bad) {
				t.Errorf("%s contains %q", e.Name(), bad)
			}
		}
	}
}

// The trace UI's address reaches the page in its meta element, escaped as
// an attribute value; without one the element is empty. The policy is the
// same either way.
func TestTraceURLInMeta(t *testing.T) {
	h := newHandler(t)
	if b := body(t, get(t, h, "GET", "/console")); !strings.Contains(b, `<meta name="orderd-trace-url" content="">`) {
		t.Errorf("without a trace UI, the meta element is not empty:\n%s", b)
	}
	h.WithTraceURL(`http://jaeger.example:16686/trace/{trace_id}?a=1&b="2"`)
	res := get(t, h, "GET", "/console/orders/x")
	b := body(t, res)
	want := `<meta name="orderd-trace-url" content="http://jaeger.example:16686/trace/{trace_id}?a=1&amp;b=&#34;2&#34;">`
	if !strings.Contains(b, want) || strings.Contains(b, "{{trace_url}}") {
		t.Errorf("index lacks %s:\n%s", want, b)
	}
	checkSecurityHeaders(t, "/console/orders/x", res)
}
