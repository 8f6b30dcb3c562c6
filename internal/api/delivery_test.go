package api

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/orderd/orderd"
)

// TestWriteTimeoutLogged: an answer whose writing outlasts the server's
// WriteTimeout (a client that does not read a 100 KB document) is logged
// as what it is: the status the handler sent, outcome write_timeout, at
// warn level; not a 500 with an error log, as when the handler's failed
// write was taken for its own failure.
func TestWriteTimeoutLogged(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	srv := New(nil, nil, nil, nil, orderd.OpenAPI, zap.New(core))
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.Listener = smallBuffers{ts.Listener}
	ts.Config.WriteTimeout = 300 * time.Millisecond
	ts.Start()
	t.Cleanup(ts.Close)

	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /openapi.yaml HTTP/1.1\r\nHost: orderd\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	var access []observer.LoggedEntry
	waitFor(t, "the access log line", func() bool {
		access = logs.FilterMessage("request").All()
		return len(access) == 1
	})
	fields := access[0].ContextMap()
	if fields["status"] != int64(http.StatusOK) || fields["outcome"] != writeTimeout || access[0].Level != zapcore.WarnLevel {
		t.Errorf("access log: %s %v, want warn, status 200, outcome %s", access[0].Level, fields, writeTimeout)
	}
	if n := logs.FilterLevelExact(zapcore.ErrorLevel).Len(); n != 0 {
		t.Errorf("%d error lines for a write timeout: %v", n, logs.FilterLevelExact(zapcore.ErrorLevel).All())
	}

	// An answer that arrives is logged as delivered.
	resp, err := http.Get(ts.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitFor(t, "the second access log line", func() bool { return logs.FilterMessage("request").Len() == 2 })
	if f := logs.FilterMessage("request").All()[1].ContextMap(); f["status"] != int64(200) || f["outcome"] != delivered {
		t.Errorf("access log of /healthz: %v", f)
	}
}
