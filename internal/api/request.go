package api

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode"

	"github.com/go-chi/chi/v5"
	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/telemetry"
)

// maxBody is the largest request body accepted. Orders have at most 100
// items, so a legitimate body is a few KiB; 1 MiB leaves room and still
// bounds what one request can make the server buffer.
const maxBody = 1 << 20

// decode reads r's JSON body into v strictly, with the semantics of Go's
// JSON v2: the media type must be JSON and the body one object, valid UTF-8
// with no lone surrogate escapes, no name twice, every name spelt exactly
// as v's fields (case-sensitively) and none unknown, each value of its
// field's type, and no string holding a control, bidi or invisible
// character. With optional set, an empty body leaves v untouched. Every
// refusal is a problem naming the field at fault; the first syntax error
// is answered before any error of a field's value.
func decode(r *http.Request, v any, optional bool) error {
	_, span := telemetry.Child(r.Context(), "decode")
	err := decodeBody(r, v, optional)
	telemetry.End(span, err)
	return err
}

// decodeBody is decode, without its span.
func decodeBody(r *http.Request, v any, optional bool) error {
	if r.ContentLength > maxBody {
		return tooLarge()
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return tooLarge()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return &aggregate.Error{Kind: errBodyTimeout, Code: "request_timeout",
			Detail: "the request body did not arrive within the server's read timeout; resend it on a new connection"}
	}
	if err != nil {
		return invalid("unreadable_body", "", "the request body could not be read: %v", err)
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		if optional {
			return nil
		}
		return invalid("malformed_json", "", "the request needs a JSON object body")
	}
	if err := checkJSONMediaType(r); err != nil {
		return err
	}
	if trimmed[0] != '{' {
		return invalid("malformed_json", "", "the request body must be a JSON object")
	}
	badText, err := scan(body)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v, json.RejectUnknownMembers(true)); err != nil {
		return decodeError(err)
	}
	return badText
}

func tooLarge() error {
	return &aggregate.Error{Kind: errBodyTooLarge, Code: "body_too_large", Detail: fmt.Sprintf("the request body is over the %d byte limit", maxBody)}
}

func checkJSONMediaType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	if err == nil && (mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")) {
		if cs, ok := params["charset"]; !ok || strings.EqualFold(cs, "utf-8") {
			return nil
		}
	}
	if ct == "" {
		ct = "none"
	}
	return &aggregate.Error{Kind: errMediaType, Code: "unsupported_media_type", Field: "Content-Type",
		Detail: fmt.Sprintf("the request body must be application/json (UTF-8), not %s", sanitize(ct, maxEcho))}
}

// scanner is scan's decoder and its reader, kept between requests in
// scanners: a new decoder costs more than the scan of a small body.
type scanner struct {
	body bytes.Reader
	dec  *jsontext.Decoder
}

var scanners = sync.Pool{New: func() any {
	sc := new(scanner)
	sc.dec = jsontext.NewDecoder(&sc.body)
	return sc
}}

// scan reads body token by token. It returns the first syntax error as err
// (invalid JSON, invalid UTF-8 or a lone surrogate escape, a name given
// twice, a null) and, separately, the first string value holding a character that
// has no place in a name or a note (see forbidden), which is answered only
// once the body has decoded.
func scan(body []byte) (badText, err error) {
	sc := scanners.Get().(*scanner)
	sc.body.Reset(body)
	dec := sc.dec
	dec.Reset(&sc.body)
	defer func() {
		sc.body.Reset(nil)
		scanners.Put(sc)
	}()
	for {
		tok, err := dec.ReadToken()
		if errors.Is(err, io.EOF) {
			return badText, nil
		}
		if err != nil {
			return nil, syntaxError(err)
		}
		if tok.Kind() == 'n' {
			// No request field takes null; decoding would leave it as
			// absent, which the contract does not say.
			field := string(dec.StackPointer())
			return nil, invalid("invalid_field", field, "%s must not be null; leave it out instead", field)
		}
		if tok.Kind() != '"' || badText != nil {
			continue
		}
		if kind, n := dec.StackIndex(dec.StackDepth()); kind == '{' && n%2 == 1 {
			continue // an object member's name: an unknown one is refused by name
		}
		if r, ok := forbidden(tok.String()); ok {
			field := string(dec.StackPointer())
			badText = invalid("invalid_character", field, "%s holds %U (%s), which is not allowed in text", field, r, runeKind(r))
		}
	}
}

func syntaxError(err error) error {
	var se *jsontext.SyntacticError
	if !errors.As(err, &se) {
		return invalid("malformed_json", "", "the request body is not valid JSON: %v", err)
	}
	field := string(se.JSONPointer)
	switch msg := se.Err.Error(); {
	case errors.Is(se.Err, jsontext.ErrDuplicateName):
		return invalid("duplicate_field", field, "%s is given twice", field)
	case strings.Contains(msg, "UTF-8"), strings.Contains(msg, "surrogate"):
		return invalid("invalid_encoding", field, "%s is not valid UTF-8 (a lone surrogate escape such as \\ud800 is not either)", field)
	}
	return invalid("malformed_json", "", "the request body is not valid JSON: %v", se.Err)
}

// decodeError turns a semantic error of JSON v2 (a value of the wrong
// type, an unknown name) into a problem at the value's JSON pointer.
func decodeError(err error) error {
	var se *json.SemanticError
	if !errors.As(err, &se) {
		return invalid("malformed_json", "", "the request body could not be decoded: %v", err)
	}
	field := string(se.JSONPointer)
	if errors.Is(se.Err, json.ErrUnknownName) {
		name := field[strings.LastIndexByte(field, '/')+1:]
		return invalid("invalid_field", field, "unknown field %s (names are case-sensitive)", echo(name))
	}
	want := "a JSON " + jsonKind(se.GoType)
	if want == "a JSON number" {
		want = "a whole number"
	}
	got := se.JSONKind.String()
	if se.JSONKind == '0' && len(se.JSONValue) > 0 {
		got = sanitize(string(se.JSONValue), maxEcho)
	}
	return invalid("invalid_field", field, "%s must be %s, not %s", field, want, got)
}

// jsonKind names the JSON kind a Go type is decoded from.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "value"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.Bool:
		return "boolean"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "number"
}

// forbidden returns the first character of s that text fields refuse:
// controls (C0, DEL and C1), bidi controls, which can make a name read
// differently from what is stored, and zero-width characters, which make
// two names that look the same differ.
func forbidden(s string) (rune, bool) {
	for _, r := range s {
		if runeKind(r) != "" {
			return r, true
		}
	}
	return 0, false
}

func runeKind(r rune) string {
	switch {
	case unicode.IsControl(r):
		return "a control character"
	case r == 0x061C, r == 0x200E, r == 0x200F, r >= 0x202A && r <= 0x202E, r >= 0x2066 && r <= 0x2069:
		return "a bidi control"
	case r >= 0x200B && r <= 0x200D, r == 0x2060, r == 0xFEFF:
		return "a zero-width character"
	}
	return ""
}

// parseUUID parses a required UUID from JSON or the path; field names it in
// the problem. Only the canonical 36-character form is accepted, and not
// the nil UUID, which names nothing.
func parseUUID(s, field string) (uuid.UUID, error) {
	if s == "" {
		return uuid.Nil, invalid("invalid_id", field, "%s is required", field)
	}
	id, why := uuidOf(s)
	if why != "" {
		return uuid.Nil, invalid("invalid_id", field, "%s %s", field, why)
	}
	return id, nil
}

// uuidOf parses s, or says why it is not a UUID the API takes.
func uuidOf(s string) (uuid.UUID, string) {
	id, err := uuid.Parse(s)
	switch {
	case err != nil || len(s) != 36:
		return uuid.Nil, fmt.Sprintf("must be a UUID like 0190c2e4-8d3e-7a8b-9c1d-2e3f4a5b6c7d, not %s", echo(s))
	case id == uuid.Nil:
		return uuid.Nil, "must not be the nil UUID, which names nothing"
	}
	return id, ""
}

// pathID returns the {id} of the route.
func pathID(r *http.Request) (uuid.UUID, error) {
	return parseUUID(chi.URLParam(r, "id"), "id")
}

// expectedVersion reads If-Match: absent or "*", AnyVersion (the command
// runs on whatever version is current); otherwise one strong entity tag of
// digits. A tag that is no version the aggregate can be at ("0" of an
// aggregate that exists, "007", one beyond int64) is not refused: like any
// tag that does not match, it ends in 412 once the command runs.
func expectedVersion(r *http.Request) (int64, error) {
	vals := r.Header.Values("If-Match")
	if len(vals) == 0 {
		return aggregate.AnyVersion, nil
	}
	h := strings.TrimSpace(vals[0])
	if len(vals) == 1 && h == "*" {
		return aggregate.AnyVersion, nil
	}
	digits, ok := strings.CutPrefix(h, `"`)
	digits, ok2 := strings.CutSuffix(digits, `"`)
	if len(vals) > 1 || !ok || !ok2 || digits == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, invalid("invalid_if_match", "If-Match", `If-Match must be * or one strong entity tag holding a version, such as "3", not %s`, echo(strings.Join(vals, ", ")))
	}
	v, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || strconv.FormatInt(v, 10) != digits {
		return math.MaxInt64, nil // matches no version
	}
	return v, nil
}

// query returns the value of query parameter name, and whether it was
// given. A parameter given empty or more than once is refused: an empty
// value is not taken for an absent one.
func query(r *http.Request, name string) (string, bool, error) {
	vals, ok := r.URL.Query()[name]
	switch {
	case !ok:
		return "", false, nil
	case len(vals) > 1:
		return "", false, invalid("invalid_query", name, "%s is given %d times", name, len(vals))
	case vals[0] == "":
		return "", false, invalid("invalid_query", name, "%s is empty; leave it out to mean none", name)
	}
	return vals[0], true, nil
}

// queryInt reads a whole-number query parameter from min to max, or def
// when absent; what describes it in the problem.
func queryInt(r *http.Request, name string, min, max, def int64, what string) (int64, error) {
	s, ok, err := query(r, name)
	if err != nil || !ok {
		return def, err
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < min || n > max {
		return 0, invalid("invalid_query", name, "%s must be %s, not %s", name, what, echo(s))
	}
	return n, nil
}

// minVersion reads ?min_version=N, 0 when absent.
func minVersion(r *http.Request) (int64, error) {
	return queryInt(r, "min_version", 1, math.MaxInt64, 0, "a whole number of 1 or more")
}

func etag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }
