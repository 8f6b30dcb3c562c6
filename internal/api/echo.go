package api

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// What a problem or a log line repeats of what a client sent (a header, a
// path, an id, a field's name or value) is bounded and sanitized: a client
// must not be able to make an answer or a log line large, nor put control
// or bidi characters into it. Headers as a whole are bounded by the
// server's MaxHeaderBytes, bodies by maxBody.
const (
	maxEcho   = 64  // runes of one client string quoted in a detail
	maxField  = 128 // runes of a problem's field (a JSON pointer or a name)
	maxDetail = 512 // runes of a problem's detail
	maxPath   = 256 // bytes of the escaped path in a problem's instance and the access log
)

// echo quotes a client's string for a problem's detail: at most maxEcho
// runes, Go-quoted (so control, format and invalid UTF-8 bytes come out
// escaped), with its full length named when it was cut.
func echo(s string) string {
	cut, n := s, 0
	for i := range s {
		if n == maxEcho {
			cut = s[:i]
			break
		}
		n++
	}
	q := strconv.Quote(cut)
	if len(cut) < len(s) {
		q += fmt.Sprintf("… (%d bytes in all)", len(s))
	}
	return q
}

// sanitize returns at most max runes of s with every control or format
// character (bidi overrides, zero-width marks) and every invalid byte
// escaped, and "…" when it was cut.
func sanitize(s string, max int) string {
	var b strings.Builder
	n := 0
	for i, r := range s {
		if n == max {
			b.WriteString("…")
			break
		}
		n++
		switch {
		case r == utf8.RuneError && len(s[i:]) > 0 && !strings.HasPrefix(s[i:], "\uFFFD"):
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// requestPath is the request's path as problems and logs show it: escaped
// (so it holds no control characters) and at most maxPath bytes, cut
// before a partial escape.
func requestPath(r *http.Request) string {
	p := r.URL.EscapedPath()
	if len(p) <= maxPath {
		return p
	}
	p = p[:maxPath]
	if i := strings.LastIndexByte(p, '%'); i >= len(p)-2 {
		p = p[:i]
	}
	return p + "…"
}
