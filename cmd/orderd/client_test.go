package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"github.com/orderd/orderd/internal/api/apitest"
)

// service is a real orderd, started by run on a loopback port with its data
// in a temporary directory.
type service struct {
	t       testing.TB
	base    string
	dataDir string
	router  routers.Router
	http    *http.Client
	stop    func() error
	logs    *syncBuffer // what orderd logged (a child process: its errors only)
}

// startWithin bounds a start: on CQL it migrates the keyspace, which on a
// loaded two-core machine has taken over 30 s (docs/cluster.md).
const startWithin = 90 * time.Second

// start runs orderd in this process until the test ends (or stop is
// called). env adds ORDERD_ variables to the defaults of a test run.
func start(t testing.TB, dataDir string, env map[string]string) *service {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	vars := map[string]string{
		"ORDERD_HTTP_ADDR": "127.0.0.1:0",
		"ORDERD_DATA_DIR":  dataDir,
		"ORDERD_LOG_LEVEL": "warn",
	}
	for k, v := range env {
		vars[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan net.Addr, 1)
	done := make(chan error, 1)
	logs := &syncBuffer{}
	go func() {
		done <- run(ctx, nil, func(k string) string { return vars[k] }, nil, logs, func(a net.Addr) { addrs <- a })
	}()
	var addr net.Addr
	select {
	case addr = <-addrs:
	case err := <-done:
		cancel()
		t.Fatalf("orderd did not start: %v\n%s", err, logs)
	case <-time.After(startWithin):
		cancel()
		t.Fatalf("orderd did not start within %s\n%s", startWithin, logs)
	}
	s := &service{t: t, base: "http://" + addr.String(), dataDir: dataDir, logs: logs,
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 128}}}
	s.router = apitest.Contract(t, s.base)
	var once sync.Once
	var stopErr error
	s.stop = func() error {
		once.Do(func() {
			// Connections the client dialled but never used count as busy
			// for http.Server.Shutdown during their first 5 s.
			s.http.CloseIdleConnections()
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(30 * time.Second):
				t.Errorf("orderd did not stop within 30s")
			}
		})
		return stopErr
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("orderd stopped with %v\n%s", err, logs)
		}
	})
	return s
}

// waitUntil polls cond every 5 ms until it holds, failing the test after
// 20 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// response is an answer that has been checked against the contract.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// problem decodes an RFC 9457 body.
func (r response) problem(t testing.TB) problemBody {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("content type %q, want application/problem+json; body %s", ct, r.Body)
	}
	var p problemBody
	r.json(t, &p)
	return p
}

type problemBody struct {
	Type, Title, Detail, Code, Field, Instance string
	Status                                     int
	CorrelationID                              string `json:"correlation_id"`
}

// call sends a request and checks the response against openapi.yaml. With
// validRequest set the request is checked too: tests of bad input send
// requests the contract refuses, and only their answers are checked.
func (s *service) call(t testing.TB, method, path string, body any, header map[string]string, validRequest bool) response {
	t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		raw = b
	case string:
		raw = []byte(b)
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequest(method, s.base+path, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if raw != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	route, params, err := s.router.FindRoute(req)
	if err != nil && validRequest {
		t.Fatalf("%s %s is not in openapi.yaml: %v", method, path, err)
	}
	var in *openapi3filter.RequestValidationInput
	if route != nil {
		in = &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true,
				AuthenticationFunc: bearerPresent}}
		if validRequest {
			if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
				t.Fatalf("%s %s: request breaks openapi.yaml: %v", method, path, err)
			}
			req.Body = io.NopCloser(bytes.NewReader(raw)) // validation read it
		}
	}
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if in != nil {
		if err := openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
			RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
			Body: io.NopCloser(bytes.NewReader(got)), Options: in.Options,
		}); err != nil {
			t.Fatalf("%s %s: %d response breaks openapi.yaml: %v\n%s", method, path, resp.StatusCode, err, got)
		}
	}
	if resp.Header.Get("X-Correlation-ID") == "" {
		t.Fatalf("%s %s: no X-Correlation-ID in the response", method, path)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: got}
}

// do is call for a request that the contract allows, expecting status want.
func (s *service) do(t testing.TB, method, path string, body any, want int, header ...string) response {
	t.Helper()
	h := map[string]string{}
	for i := 0; i+1 < len(header); i += 2 {
		h[header[i]] = header[i+1]
	}
	r := s.call(t, method, path, body, h, true)
	if r.Status != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.Status, want, r.Body)
	}
	return r
}

func (s *service) eventsDB() string { return filepath.Join(s.dataDir, "events.db") }

// syncBuffer collects a service's logs for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.TrimSpace(b.b.String())
}

// bearerPresent checks what the contract's bearer scheme can: that a
// request to an admin route carries a bearer token. Whether the token is
// right is the server's to say (401).
func bearerPresent(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	if !strings.HasPrefix(in.RequestValidationInput.Request.Header.Get("Authorization"), "Bearer ") {
		return in.NewError(errors.New("no bearer token"))
	}
	return nil
}

// logged returns the lines s's orderd logged that name correlation id, for
// a failure message. It waits up to 5 s for the first: a child's line
// reaches its buffer through a pipe and a reader goroutine, which can be
// behind the answer that the line was logged before.
func (s *service) logged(id string) string {
	if s.logs == nil || id == "" {
		return ""
	}
	var out []string
	for deadline := time.Now().Add(5 * time.Second); len(out) == 0 && time.Now().Before(deadline); {
		for line := range strings.SplitSeq(s.logs.String(), "\n") {
			if strings.Contains(line, id) {
				out = append(out, line)
			}
		}
		if len(out) == 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if len(out) == 0 {
		return "(orderd logged no error line with correlation id " + id + ")"
	}
	return strings.Join(out, "\n")
}
