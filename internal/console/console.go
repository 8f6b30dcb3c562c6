// Package console is orderd's operator console: a few static pages and ES
// modules, embedded in the binary, that read the public API (the live
// event stream, orders, customers, time travel, /readyz) and the admin API
// (dead letters) from the browser. It needs no build step and fetches
// nothing from elsewhere.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed assets
var assets embed.FS

// Prefix is where the console is served.
const Prefix = "/console"

// securityPolicy is sent with every console response. The pages load only
// their own scripts and styles (none inline) and talk only to this origin,
// so injected markup could neither run nor send anything anywhere.
const securityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// file is one embedded asset, ready to serve.
type file struct {
	body        []byte
	contentType string
	etag        string
}

// Handler serves the console under Prefix. Assets live under
// /console/assets/<version>/, where version is a digest of every asset, so
// they can be cached for good: a new build changes the path. Every other
// path under /console is a page of the single-page app and gets index.html
// (never cached), so that a deep link such as /console/orders/{id} works on
// reload; the app's router reads the path.
type Handler struct {
	version string // the digest in asset paths
	index   file
	page    []byte          // index.html with the asset paths, before WithTraceURL
	files   map[string]file // by name, index.html excluded
}

// New returns the console's handler. It fails only if the embedded assets
// are broken, which is a build error.
func New() (*Handler, error) {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, err
	}
	entries, err := fs.ReadDir(sub, ".")
	if err != nil {
		return nil, err
	}
	h := &Handler{files: map[string]file{}}
	all := sha256.New()
	var index []byte
	for _, e := range entries {
		if e.IsDir() {
			continue // the assets are one flat folder
		}
		b, err := fs.ReadFile(sub, e.Name())
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(all, "%s %d\n", e.Name(), len(b))
		all.Write(b)
		if e.Name() == "index.html" {
			index = b
			continue
		}
		h.files[e.Name()] = newFile(e.Name(), b)
	}
	if index == nil {
		return nil, fmt.Errorf("console: no index.html among the assets")
	}
	h.version = hex.EncodeToString(all.Sum(nil))[:16]
	// index.html names its assets under {{assets}}; ES modules import each
	// other by relative path, so they all stay under the one version.
	h.page = bytes.ReplaceAll(index, []byte("{{assets}}"), []byte(h.AssetPath()))
	return h.WithTraceURL(""), nil
}

// WithTraceURL makes the console link each event's trace id to a trace
// UI: template is an absolute URL with {trace_id} where the id goes
// (http://localhost:16686/trace/{trace_id} for Jaeger); empty, the trace
// id is shown without a link. The page learns it from a meta element, so
// the content security policy stays as it is: a link is a navigation,
// which the policy does not restrict.
func (h *Handler) WithTraceURL(template string) *Handler {
	page := bytes.ReplaceAll(h.page, []byte("{{trace_url}}"), []byte(html.EscapeString(template)))
	h.index = newFile("index.html", page)
	return h
}

func newFile(name string, b []byte) file {
	sum := sha256.Sum256(b)
	return file{body: b, contentType: contentType(name), etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
}

// contentType is spelled out rather than taken from the system's MIME
// table, which varies: a module script served as anything but JavaScript
// is refused by the browser.
func contentType(name string) string {
	switch path.Ext(name) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	case ".png":
		return "image/png"
	}
	return "application/octet-stream"
}

// AssetPath is the path under which this build's assets are served.
func (h *Handler) AssetPath() string { return Prefix + "/assets/" + h.version }

// ServeHTTP answers GET and HEAD (and OPTIONS) on every path under Prefix.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", securityPolicy)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodOptions:
		hd.Set("Allow", "GET, HEAD, OPTIONS")
		w.WriteHeader(http.StatusNoContent)
		return
	default:
		hd.Set("Allow", "GET, HEAD, OPTIONS")
		http.Error(w, "the console takes GET and HEAD only", http.StatusMethodNotAllowed)
		return
	}

	if rest, ok := strings.CutPrefix(r.URL.Path, Prefix+"/assets/"); ok {
		version, name, _ := strings.Cut(rest, "/")
		f, found := h.files[name]
		if version != h.version || !found {
			// An asset of another build, or none: a page that asks for it
			// is stale and must be reloaded, not served a mismatched file.
			hd.Set("Cache-Control", "no-store")
			http.NotFound(w, r)
			return
		}
		hd.Set("Cache-Control", "public, max-age=31536000, immutable")
		serve(w, r, f)
		return
	}
	hd.Set("Cache-Control", "no-cache")
	serve(w, r, h.index)
}

// serve writes f, or 304 when the client holds it already.
func serve(w http.ResponseWriter, r *http.Request, f file) {
	hd := w.Header()
	hd.Set("ETag", f.etag)
	if match := r.Header.Get("If-None-Match"); match != "" && etagMatches(match, f.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	hd.Set("Content-Type", f.contentType)
	hd.Set("Content-Length", fmt.Sprint(len(f.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(f.body)
	}
}

// etagMatches reads If-None-Match's list (RFC 9110 13.1.2, weak
// comparison).
func etagMatches(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}
