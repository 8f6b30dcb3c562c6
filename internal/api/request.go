package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
)

// maxBody is the largest request body accepted. Orders have at most 100
// items, so a legitimate body is a few KiB; 1 MiB leaves room and still
// bounds what one request can make the server buffer.
const maxBody = 1 << 20

// decode reads r's JSON body into v strictly: the media type must be JSON,
// the body one object with no unknown fields and nothing after it. With
// optional set, an empty body leaves v untouched. Every refusal is an
// *aggregate.Error naming the field at fault.
func decode(r *http.Request, v any, optional bool) error {
	if r.ContentLength > maxBody {
		return httpError(errBodyTooLarge, "body_too_large", fmt.Sprintf("the request body is over the %d byte limit", maxBody))
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return httpError(errBodyTooLarge, "body_too_large", fmt.Sprintf("the request body is over the %d byte limit", maxBody))
	}
	if err != nil {
		return aggregate.Invalid("unreadable_body", "", "the request body could not be read: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if optional {
			return nil
		}
		return aggregate.Invalid("malformed_json", "", "the request needs a JSON object body")
	}
	if err := checkJSONMediaType(r); err != nil {
		return err
	}
	if trimmed := bytes.TrimSpace(body); trimmed[0] != '{' {
		return aggregate.Invalid("malformed_json", "", "the request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(body, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return aggregate.Invalid("malformed_json", "", "the request body has data after its JSON object")
	}
	return nil
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
	return httpError(errMediaType, "unsupported_media_type",
		fmt.Sprintf("the request body must be application/json (UTF-8), not %s", ct))
}

// decodeError turns encoding/json's errors into problems with a field.
func decodeError(body []byte, err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
		return aggregate.Invalid("malformed_json", "", "the request body is not valid JSON: %v", err)
	case errors.As(err, &typ):
		field := pointerAt(body, typ.Offset)
		if field == "" {
			field = pointer(typ.Field)
		}
		return aggregate.Invalid("invalid_field", field, "%s must be a JSON %s, not %s", field, jsonKind(typ.Type.Kind().String()), typ.Value)
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name, _ = strconv.Unquote(name)
		return aggregate.Invalid("invalid_field", pointer(name), "unknown field %q", name)
	}
	return aggregate.Invalid("malformed_json", "", "the request body could not be decoded: %v", err)
}

// pointerAt returns the JSON pointer of the value at offset in body: the
// scalar that ends there, or the object or array that opens there. encoding/json reports a type error's path without array indexes
// ("items.quantity"), which cannot tell a client which item is wrong; its
// offset can, so the body is walked again, token by token, to find it.
func pointerAt(body []byte, offset int64) string {
	type frame struct {
		array   bool
		index   int
		key     string
		wantKey bool
	}
	var stack []frame
	path := func() string {
		var b strings.Builder
		for _, f := range stack {
			b.WriteByte('/')
			if f.array {
				b.WriteString(strconv.Itoa(f.index))
			} else {
				b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(f.key))
			}
		}
		return b.String()
	}
	// valueDone is called after each complete value: it reports whether
	// that value is the one at fault, and readies the parent for the next.
	valueDone := func(dec *json.Decoder) bool {
		if dec.InputOffset() >= offset {
			return true
		}
		if n := len(stack); n > 0 && !stack[n-1].array {
			stack[n-1].wantKey = true
		}
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	for {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		n := len(stack)
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:n-1]
			if valueDone(dec) {
				return path()
			}
			continue
		}
		if n > 0 && stack[n-1].wantKey {
			stack[n-1].key, _ = tok.(string)
			stack[n-1].wantKey = false
			continue
		}
		if n > 0 && stack[n-1].array {
			stack[n-1].index++
		}
		if d, ok := tok.(json.Delim); ok {
			// encoding/json reports an object or array of the wrong type
			// just past its opening delimiter.
			if dec.InputOffset() >= offset {
				return path()
			}
			stack = append(stack, frame{array: d == '[', index: -1, wantKey: d == '{'})
			continue
		}
		if valueDone(dec) {
			return path()
		}
	}
}

// pointer turns encoding/json's dotted field path ("items.0.quantity") into
// a JSON pointer ("/items/0/quantity").
func pointer(path string) string {
	if path == "" {
		return ""
	}
	return "/" + strings.ReplaceAll(path, ".", "/")
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "slice", "array":
		return "array"
	case "struct", "map":
		return "object"
	case "bool":
		return "boolean"
	}
	return "number"
}

// parseUUID parses a required id from JSON or the path; field names it in the
// problem.
func parseUUID(s, field string) (uuid.UUID, error) {
	if s == "" {
		return uuid.Nil, aggregate.Invalid("invalid_id", field, "%s is required", field)
	}
	id, err := uuid.Parse(s)
	if err != nil || id == uuid.Nil || len(s) != 36 {
		return uuid.Nil, aggregate.Invalid("invalid_id", field, "%s must be a UUID like 0190c2e4-8d3e-7a8b-9c1d-2e3f4a5b6c7d, not %q", field, s)
	}
	return id, nil
}

// pathID returns the {id} of the route.
func pathID(r *http.Request) (uuid.UUID, error) {
	return parseUUID(chi.URLParam(r, "id"), "id")
}

// expectedVersion reads If-Match: a strong ETag holding the version the
// client last saw, or AnyVersion without the header (or with "*").
func expectedVersion(r *http.Request) (int64, error) {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" || h == "*" {
		return aggregate.AnyVersion, nil
	}
	unq, err := strconv.Unquote(h)
	if err != nil || !strings.HasPrefix(h, `"`) {
		return 0, aggregate.Invalid("invalid_if_match", "If-Match", `If-Match must be one strong ETag such as "3", not %s`, h)
	}
	v, err := strconv.ParseInt(unq, 10, 64)
	if err != nil || v < 1 {
		return 0, aggregate.Invalid("invalid_if_match", "If-Match", `If-Match must hold a version of 1 or more, such as "3", not %s`, h)
	}
	return v, nil
}

// minVersion reads ?min_version=N, 0 when absent.
func minVersion(r *http.Request) (int64, error) {
	s := r.URL.Query().Get("min_version")
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 1 {
		return 0, aggregate.Invalid("invalid_query", "min_version", "min_version must be a whole number of 1 or more, not %q", s)
	}
	return v, nil
}

func etag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }
