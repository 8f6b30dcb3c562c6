// Package cqltest gives tests a real CQL server: ScyllaDB, or the Apache
// Cassandra 5.0 node that scripts/cassandra.sh runs as its stand-in.
//
// A test asks for the server with Hosts and for a keyspace of its own with
// Keyspace:
//
//	hosts := cqltest.Hosts(t)          // skips without a server, fails under CI=true
//	ks := cqltest.Keyspace(t, hosts)   // a fresh name, dropped at cleanup
//
// The server is found from ORDERD_TEST_CQL (comma-separated host:port
// contact points); without it, it is the node scripts/cassandra.sh starts,
// 127.0.0.1 on CASSANDRA_PORT (the script's variable, default 9042). It
// must answer a real query, not only accept connections. Locally a missing
// server skips the test; under CI=true it fails it, so that a CI run cannot
// pass by testing nothing. Under go test -short (make quick) every such test
// skips at once.
package cqltest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gocql/gocql"
)

// DefaultPort is the CQL port of scripts/cassandra.sh when CASSANDRA_PORT
// is unset.
const DefaultPort = "9042"

// Addr returns the contact points, comma-separated: ORDERD_TEST_CQL if
// set, else 127.0.0.1 on CASSANDRA_PORT (default DefaultPort), where
// scripts/cassandra.sh start puts the node.
func Addr() string {
	return addr(os.Getenv)
}

func addr(getenv func(string) string) string {
	if a := getenv("ORDERD_TEST_CQL"); a != "" {
		return a
	}
	port := getenv("CASSANDRA_PORT")
	if port == "" {
		port = DefaultPort
	}
	return "127.0.0.1:" + port
}

// Timeout bounds each request of the helpers. A single node on two cores can
// take seconds to answer its first queries or a schema change.
const Timeout = 10 * time.Second

// dropTimeout bounds dropping a keyspace, a schema change that waits for
// the node to flush and delete the keyspace's tables.
const dropTimeout = 60 * time.Second

// server is the probe's result, shared by every test of the process: the
// first test pays for the probe, and the session serves the cleanups.
var server struct {
	once  sync.Once
	hosts []string
	sess  *gocql.Session
	err   error
}

// Hosts returns the contact points of a CQL server that answers queries.
// When there is none it skips t, or fails it if CI=true, naming the command
// that starts one. Under go test -short (make quick) it skips t without
// looking: the quick run needs no server.
func Hosts(t testing.TB) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: needs a CQL server")
	}
	server.once.Do(probe)
	if server.err != nil {
		msg := fmt.Sprintf("no CQL server at %s (ORDERD_TEST_CQL, CASSANDRA_PORT): %s; start one with scripts/cassandra.sh start",
			strings.Join(server.hosts, ","), strings.TrimSpace(server.err.Error()))
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return server.hosts
}

// probe connects to the configured hosts and runs a query, since a node
// accepts connections well before it serves queries.
func probe() {
	for h := range strings.SplitSeq(Addr(), ",") {
		if h = strings.TrimSpace(h); h != "" {
			server.hosts = append(server.hosts, h)
		}
	}
	c := gocql.NewCluster(server.hosts...)
	c.Timeout = Timeout
	c.ConnectTimeout = Timeout
	c.Consistency = gocql.One
	c.Logger = quiet{} // a missing server is reported once, by Hosts
	sess, err := c.CreateSession()
	if err != nil {
		server.err = err
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	var version string
	if err := sess.Query(`SELECT release_version FROM system.local`).WithContext(ctx).Scan(&version); err != nil {
		sess.Close()
		server.err = fmt.Errorf("query system.local: %w", err)
		return
	}
	server.sess = sess
}

// Keyspace returns the name of a keyspace that does not exist yet, for t
// alone; the code under test creates it. It drops the keyspace when t's
// cleanups run (after those registered later, such as closing a store).
func Keyspace(t testing.TB, hosts []string) string {
	t.Helper()
	if server.sess == nil {
		Hosts(t) // skips or fails
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := "orderd_test_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), dropTimeout)
		defer cancel()
		// IF EXISTS makes a retry after a timeout harmless.
		err := server.sess.Query(`DROP KEYSPACE IF EXISTS ` + name).WithContext(ctx).Idempotent(true).Exec()
		if err != nil {
			// The data is the test's own; leaving it costs disk, not
			// correctness.
			t.Logf("drop keyspace %s at %v: %v", name, hosts, err)
		}
	})
	return name
}

// quiet is a gocql logger that drops everything.
type quiet struct{}

func (quiet) Print(...any)          {}
func (quiet) Printf(string, ...any) {}
func (quiet) Println(...any)        {}
