// Package jaegertest gives tests a real Jaeger: where to send spans and a
// way to read a trace back from its query API.
//
// Jaeger comes from scripts/jaeger.sh: 127.0.0.1 on JAEGER_OTLP_PORT
// (OTLP/HTTP, default 4318) and JAEGER_QUERY_PORT (the query API, default
// 16686), the script's variables. Tests skip when it does not answer,
// except under CI=true, where a missing Jaeger fails them; under go test
// -short (make quick) they skip at once.
package jaegertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"testing"
	"time"
)

// Jaeger is the test's Jaeger.
type Jaeger struct {
	OTLP  string // the OTLP/HTTP base URL, for OTEL_EXPORTER_OTLP_ENDPOINT
	Query string // the query API's base URL
}

// Start returns the Jaeger of scripts/jaeger.sh once its query API
// answers; without one it skips the test, or fails it when CI=true.
func Start(t testing.TB) Jaeger {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: needs Jaeger")
	}
	j := Jaeger{OTLP: "http://127.0.0.1:" + port("JAEGER_OTLP_PORT", "4318"),
		Query: "http://127.0.0.1:" + port("JAEGER_QUERY_PORT", "16686")}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, j.Query+"/api/services", nil)
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET /api/services: %s", resp.Status)
		}
	}
	if err != nil {
		msg := fmt.Sprintf("jaeger at %s does not answer (%v); start it with scripts/jaeger.sh start, or set JAEGER_QUERY_PORT", j.Query, err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return j
}

func port(name, def string) string {
	if p := os.Getenv(name); p != "" {
		return p
	}
	return def
}

// Span is one span as Jaeger's query API (v1 JSON) shows it.
type Span struct {
	TraceID       string      `json:"traceID"`
	SpanID        string      `json:"spanID"`
	OperationName string      `json:"operationName"`
	References    []Reference `json:"references"`
	Tags          []Tag       `json:"tags"`
}

// Reference is a span's parent (CHILD_OF) or link (FOLLOWS_FROM).
type Reference struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

// Tag is a span attribute.
type Tag struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

// Parent is the span's CHILD_OF reference's span id, or "".
func (s Span) Parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// Tag returns the value of the span's tag key, or nil.
func (s Span) Tag(key string) any {
	for _, t := range s.Tags {
		if t.Key == key {
			return t.Value
		}
	}
	return nil
}

// Trace reads trace id (32 hex digits) until it holds a span of every
// operation in want, and returns its spans; it fails the test after
// within, showing what it found.
func (j Jaeger) Trace(t testing.TB, id string, within time.Duration, want ...string) []Span {
	t.Helper()
	deadline := time.Now().Add(within)
	var spans []Span
	var err error
	for {
		spans, err = j.trace(id)
		if err == nil && holds(spans, want) {
			return spans
		}
		if time.Now().After(deadline) {
			var ops []string
			for _, s := range spans {
				ops = append(ops, s.OperationName)
			}
			t.Fatalf("trace %s in jaeger: spans %q (err %v), want one of each of %q", id, ops, err, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Operation returns the spans of service's operation that Jaeger holds
// (the 50 newest traces of the last hour).
func (j Jaeger) Operation(t testing.TB, service, operation string) []Span {
	t.Helper()
	q := url.Values{"service": {service}, "operation": {operation}, "limit": {"50"}, "lookback": {"1h"}}
	spans, err := j.get("/api/traces?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	var out []Span
	for _, s := range spans {
		if s.OperationName == operation {
			out = append(out, s)
		}
	}
	return out
}

// Missing reports whether Jaeger has no span of trace id.
func (j Jaeger) Missing(t testing.TB, id string) bool {
	t.Helper()
	spans, err := j.trace(id)
	if err != nil {
		t.Fatal(err)
	}
	return len(spans) == 0
}

func holds(spans []Span, want []string) bool {
	for _, w := range want {
		if !slices.ContainsFunc(spans, func(s Span) bool { return s.OperationName == w }) {
			return false
		}
	}
	return true
}

// trace is GET /api/traces/{id}: its spans, none when Jaeger has no such
// trace (it answers 404).
func (j Jaeger) trace(id string) ([]Span, error) {
	return j.get("/api/traces/" + id)
}

// get reads the traces that path answers and returns their spans.
func (j Jaeger) get(path string) ([]Span, error) {
	resp, err := http.Get(j.Query + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	var body struct {
		Data []struct {
			Spans []Span `json:"spans"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	var spans []Span
	for _, d := range body.Data {
		spans = append(spans, d.Spans...)
	}
	return spans, nil
}
