package api

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestConnsEvictionPassesOverUnreadRequests fills a cap of two with a
// connection whose client has sent a request nobody has read yet (the
// older) and a silent one (the newer), as a flood leaves them when the
// server has not yet scheduled the first one's goroutine: a third
// connection evicts the silent one, not the older one with a request
// waiting.
func TestConnsEvictionPassesOverUnreadRequests(t *testing.T) {
	conns, dial, accept := capped(t, 2)

	talker := dial()
	if _, err := talker.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	talkerSide := accept()
	for deadline := time.Now().Add(5 * time.Second); !unread(talkerSide.(*conn).Conn); {
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the server's socket")
		}
		time.Sleep(time.Millisecond)
	}
	silent := dial()
	accept()
	dial()
	accept() // the cap is reached: one of the first two must go

	if got := conns.Open(); got != 2 {
		t.Fatalf("%d connections open, want the cap of 2", got)
	}
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the silent connection: read %v, want EOF (evicted)", err)
	}
	buf := make([]byte, 64)
	n, err := talkerSide.Read(buf)
	if err != nil || string(buf[:n]) != "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" {
		t.Fatalf("the connection with a request waiting: read %q, %v; want its request", buf[:n], err)
	}
}

// TestConnsEvictsLongestInactive: with nothing waiting on any connection,
// the one that has been inactive longest goes first.
func TestConnsEvictsLongestInactive(t *testing.T) {
	conns, dial, accept := capped(t, 2)
	var clients []net.Conn
	for range 3 {
		clients = append(clients, dial())
		accept()
	}
	clients[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := clients[0].Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the oldest silent connection: read %v, want EOF (evicted)", err)
	}
	clients[1].SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := clients[1].Read(make([]byte, 1)); err == io.EOF {
		t.Fatal("the second connection was closed too")
	}
	if got := conns.Open(); got != 2 {
		t.Fatalf("%d connections open, want 2", got)
	}
}

// capped listens on loopback with a cap of limit connections, and returns
// the cap, a dial of a client (closed at the test's end) and an accept of
// its server side, tracked as http.Server does on accept.
func capped(t *testing.T, limit int) (conns *Conns, dial, accept func() net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns = NewConns(limit, nil)
	l := conns.Listener(ln)
	t.Cleanup(func() { l.Close() })
	dial = func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	accept = func() net.Conn {
		t.Helper()
		nc, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		conns.Track(nc, http.StateNew)
		return nc
	}
	return conns, dial, accept
}
