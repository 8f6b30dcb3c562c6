package api

import (
	"container/list"
	"net"
	"net/http"
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
)

// Conns caps the connections an http.Server holds open. Wrap its listener
// with Listener and set its ConnState to Conns.Track.
//
// It does not make connections beyond the cap wait in the kernel's accept
// backlog, as golang.org/x/net/netutil.LimitListener does: under a flood
// of connections that stay silent or idle, the backlog fills with them and
// a health check or a real client waits behind them until they time out.
// Instead every connection is accepted at once, and when the cap is
// reached the connection that has been inactive longest (an idle
// keep-alive connection, or one that has not sent a request yet) is closed
// to make room; when every open connection is busy with a request, the new
// one is closed at once. A connection whose client has sent bytes the
// server has not read yet is not inactive, only not yet scheduled: under a
// flood the server may accept a thousand connections before a health
// check's goroutine reads the request it sent at once, so such a
// connection is passed over while an older silent one can go. Either way the number of open connections never
// passes the cap, so the file descriptors do not run out, and a client
// that sends its request at once (a health check, a load balancer, a
// keep-alive client reconnecting) is served.
type Conns struct {
	max int

	mu       sync.Mutex
	open     int
	inactive list.List // of *conn, the longest inactive first
	evicted  prometheus.Counter
	refused  prometheus.Counter
}

// NewConns returns a cap of limit connections (limit ≥ 1). Its gauge of open
// connections and counters of closed ones are registered in reg, when not
// nil.
func NewConns(limit int, reg prometheus.Registerer) *Conns {
	c := &Conns{
		max: max(limit, 1),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderd_http_connections_evicted_total",
			Help: "Inactive HTTP connections closed to make room for a new one at the connection cap (ORDERD_MAX_CONNS).",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderd_http_connections_refused_total",
			Help: "New HTTP connections closed at once because every connection up to the cap was busy with a request.",
		}),
	}
	if reg != nil {
		reg.MustRegister(c.evicted, c.refused, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "orderd_http_connections",
			Help: "HTTP connections open now.",
		}, func() float64 { return float64(c.Open()) }))
	}
	return c
}

// Max returns the cap.
func (c *Conns) Max() int { return c.max }

// Open returns how many connections are open now.
func (c *Conns) Open() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open
}

// Listener returns l with the cap applied to what it accepts.
func (c *Conns) Listener(l net.Listener) net.Listener { return &capListener{Listener: l, c: c} }

// Track is the server's ConnState hook: it keeps the order in which
// connections became inactive.
func (c *Conns) Track(nc net.Conn, state http.ConnState) {
	cn, ok := nc.(*conn)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cn.elem != nil {
		c.inactive.Remove(cn.elem)
		cn.elem = nil
	}
	if (state == http.StateNew || state == http.StateIdle) && !cn.closed {
		cn.elem = c.inactive.PushBack(cn)
	}
}

// victimScan bounds how many of the longest inactive connections admit
// looks at for one with nothing waiting to be read; when all of them have,
// the longest inactive goes anyway, since the cap must hold.
const victimScan = 64

// admit takes a slot for a new connection, closing the longest inactive
// one when the cap is reached. It returns false when every slot is busy.
func (c *Conns) admit() bool {
	for {
		c.mu.Lock()
		if c.open < c.max {
			c.open++
			c.mu.Unlock()
			return true
		}
		front := c.inactive.Front()
		if front == nil {
			c.mu.Unlock()
			c.refused.Inc()
			return false
		}
		chosen := front
		for e, n := front, 0; e != nil && n < victimScan; e, n = e.Next(), n+1 {
			if !unread(e.Value.(*conn).Conn) {
				chosen = e
				break
			}
		}
		victim := chosen.Value.(*conn)
		c.inactive.Remove(chosen)
		victim.elem = nil
		c.mu.Unlock()
		c.evicted.Inc()
		_ = victim.Close() // frees its slot
	}
}

type capListener struct {
	net.Listener
	c *Conns
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.c.admit() {
			return &conn{Conn: nc, c: l.c}, nil
		}
		_ = nc.Close()
	}
}

// conn frees its slot when it is first closed, by the server or by an
// eviction.
type conn struct {
	net.Conn
	c *Conns

	// Guarded by c.mu.
	elem   *list.Element // in c.inactive while new or idle
	closed bool
}

func (cn *conn) Close() error {
	cn.c.mu.Lock()
	if cn.closed {
		cn.c.mu.Unlock()
		return nil
	}
	cn.closed = true
	if cn.elem != nil {
		cn.c.inactive.Remove(cn.elem)
		cn.elem = nil
	}
	cn.c.open--
	cn.c.mu.Unlock()
	return cn.Conn.Close()
}

// unread reports whether the peer of nc has sent bytes that nobody has read
// yet. It peeks at the socket without blocking (Go's sockets are
// non-blocking) and without taking the connection's read lock, which a
// server goroutine waiting for the next request holds.
func unread(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var n int
	if err := raw.Control(func(fd uintptr) {
		var b [1]byte
		n, _, _ = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK)
	}); err != nil {
		return false
	}
	return n > 0
}
