package cql

import (
	"errors"
	"strings"
	"testing"

	"github.com/gocql/gocql"
	"github.com/scylladb/gocqlx/v3"
	"go.uber.org/zap/zaptest"

	"github.com/orderd/orderd/internal/store/cqltest"
)

// TestCreateClause: how the keyspace is created for each tablets mode on
// each kind of server, from the release the server reports.
func TestCreateClause(t *testing.T) {
	cassandra := server{}
	scylla := func(v string) server { return server{scylla: true, version: v} }
	const (
		refused = "refused"
		nts     = "{'class': 'NetworkTopologyStrategy', 'dc1': 3}"
	)
	for _, c := range []struct {
		name string
		srv  server
		want map[TabletsMode]string // clause, or refused
	}{
		{"Apache Cassandra", cassandra, map[TabletsMode]string{TabletsAuto: "", TabletsOff: "", TabletsOn: refused}},
		{"ScyllaDB without system.versions", scylla(""), map[TabletsMode]string{TabletsAuto: "", TabletsOff: "", TabletsOn: refused}},
		{"ScyllaDB 5.4", scylla("5.4.10-0.20240830.1234abcd"), map[TabletsMode]string{TabletsAuto: "", TabletsOff: "", TabletsOn: refused}},
		{"Enterprise 2024.1 (5.4 based)", scylla("2024.1.12-0.20241201.aa"), map[TabletsMode]string{TabletsAuto: "", TabletsOff: "", TabletsOn: refused}},
		{"ScyllaDB 6.0 release candidate", scylla("6.0.0~rc3-20240605.c6f0a3267ef0"), map[TabletsMode]string{TabletsAuto: tabletsOff, TabletsOff: tabletsOff, TabletsOn: refused}},
		{"ScyllaDB 6.2", scylla("6.2.3-0.20250119.bff9ddde1283"), map[TabletsMode]string{TabletsAuto: tabletsOff, TabletsOff: tabletsOff, TabletsOn: refused}},
		{"Enterprise 2024.2 (6.0 based)", scylla("2024.2.0"), map[TabletsMode]string{TabletsAuto: tabletsOff, TabletsOff: tabletsOff, TabletsOn: refused}},
		{"ScyllaDB 2025.1", scylla("2025.1.4-0.20250617.abc"), map[TabletsMode]string{TabletsAuto: tabletsOff, TabletsOff: tabletsOff, TabletsOn: refused}},
		{"ScyllaDB 2025.3", scylla("2025.3.2"), map[TabletsMode]string{TabletsAuto: tabletsOff, TabletsOff: tabletsOff, TabletsOn: refused}},
		{"ScyllaDB 2025.4", scylla("2025.4.0-0.20251201.0123"), map[TabletsMode]string{TabletsAuto: "", TabletsOff: tabletsOff, TabletsOn: tabletsOn}},
		{"ScyllaDB 2026.1 dev build", scylla("2026.1.0~dev-0.20260110.ffff"), map[TabletsMode]string{TabletsAuto: "", TabletsOff: tabletsOff, TabletsOn: tabletsOn}},
		{"ScyllaDB 2026 without minor", scylla("2026"), map[TabletsMode]string{TabletsAuto: "", TabletsOff: tabletsOff, TabletsOn: tabletsOn}},
	} {
		for mode, want := range c.want {
			got, err := createClause(mode, c.srv, nts)
			switch {
			case want == refused && !errors.Is(err, ErrTablets):
				t.Errorf("%s, tablets=%s: clause %q, error %v; want ErrTablets", c.name, mode, got, err)
			case want == refused && !strings.Contains(err.Error(), "2025.4"):
				t.Errorf("%s, tablets=%s: %v; want the error to name the release that can", c.name, mode, err)
			case want != refused && (err != nil || got != want):
				t.Errorf("%s, tablets=%s: clause %q, error %v; want %q", c.name, mode, got, err, want)
			}
		}
	}

	// Tablets need NetworkTopologyStrategy: with SimpleStrategy (the
	// default replication), a 2025.4 that defaults to tablets would refuse
	// the keyspace unless auto asks for vnodes.
	simple := DefaultReplication
	if got, err := createClause(TabletsAuto, scylla("2025.4.1"), simple); err != nil || got != tabletsOff {
		t.Errorf("auto, SimpleStrategy, 2025.4: %q, %v; want tablets disabled", got, err)
	}
	if _, err := createClause(TabletsOn, scylla("2025.4.1"), simple); !errors.Is(err, ErrTablets) || !strings.Contains(err.Error(), "NetworkTopologyStrategy") {
		t.Errorf("on, SimpleStrategy, 2025.4: %v; want ErrTablets naming NetworkTopologyStrategy", err)
	}
	if got, err := createClause(TabletsAuto, cassandra, simple); err != nil || got != "" {
		t.Errorf("auto, SimpleStrategy, Cassandra: %q, %v; want no clause", got, err)
	}

	if _, err := createClause(TabletsAuto, scylla("enterprise"), nts); !errors.Is(err, ErrTablets) {
		t.Errorf("an unreadable ScyllaDB version: %v, want ErrTablets", err)
	}
	if _, err := createClause("yes", cassandra, nts); !errors.Is(err, ErrTablets) {
		t.Errorf("an unknown mode: %v, want ErrTablets", err)
	}
}

// adminSession connects to the test server with no keyspace, as migrate
// does first, and closes the session in t's cleanup.
func adminSession(t *testing.T, cfg Config) gocqlx.Session {
	t.Helper()
	cfg, err := cfg.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	sess, err := connect(cfg, "", zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(sess.Close)
	return sess
}

// TestTabletsOnCassandra: Cassandra does not know the tablets option, so
// auto and off create the keyspace without it (a clause would fail the
// CREATE with "Unknown property 'tablets'"), on refuses before creating
// anything, and a keyspace that exists is used whatever the mode.
func TestTabletsOnCassandra(t *testing.T) {
	cfg, err := testConfig(t).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	admin := adminSession(t, cfg)
	srv, err := detect(ctxFor(t), admin)
	if err != nil {
		t.Fatalf("detect: %v", err)
	}
	if srv.scylla {
		t.Skipf("the server is %s; this test is about Cassandra", srv)
	}
	exists := func() bool {
		t.Helper()
		var name string
		err := admin.Session.Query(`SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?`, cfg.Keyspace).Scan(&name)
		if err != nil && !errors.Is(err, gocql.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	log := zaptest.NewLogger(t)

	for _, mode := range []TabletsMode{TabletsAuto, TabletsOff} {
		ks := cfg
		ks.Keyspace, ks.Tablets = cqltest.Keyspace(t, cfg.Hosts), mode
		if err := createKeyspace(ctxFor(t), admin, ks, srv, log); err != nil {
			t.Errorf("tablets=%s on Cassandra: %v", mode, err)
		}
	}

	cfg.Tablets = TabletsOn
	err = createKeyspace(ctxFor(t), admin, cfg, srv, log)
	if !errors.Is(err, ErrTablets) || !strings.Contains(err.Error(), "Cassandra") {
		t.Fatalf("tablets=on on Cassandra: %v; want ErrTablets naming the server", err)
	}
	if exists() {
		t.Fatal("tablets=on on Cassandra created the keyspace")
	}
	cfg.Tablets = TabletsOff
	if err := createKeyspace(ctxFor(t), admin, cfg, srv, log); err != nil || !exists() {
		t.Fatalf("tablets=off: %v, keyspace exists: %v", err, exists())
	}
	cfg.Tablets = TabletsOn
	if err := createKeyspace(ctxFor(t), admin, cfg, srv, log); err != nil {
		t.Fatalf("tablets=on with the keyspace there: %v; want it used as it is", err)
	}
}

// TestLocalDC: with LocalDC the driver keeps to that datacenter's nodes;
// a datacenter the cluster does not have fails Open, naming it.
func TestLocalDC(t *testing.T) {
	cfg := testConfig(t)
	var dc string
	if err := adminSession(t, cfg).Session.Query(`SELECT data_center FROM system.local`).Scan(&dc); err != nil {
		t.Fatal(err)
	}
	local := cfg
	local.LocalDC = dc
	hosts := adminSession(t, local).Session.GetHosts()
	if len(hosts) == 0 {
		t.Fatalf("LocalDC %s: no hosts", dc)
	}
	for _, h := range hosts {
		if h.DataCenter() != dc {
			t.Errorf("LocalDC %s: the session has host %s of datacenter %s", dc, h.ConnectAddress(), h.DataCenter())
		}
	}

	nowhere := cfg
	nowhere.LocalDC = "no_such_dc"
	nowhere.Logger = zaptest.NewLogger(t)
	_, err := OpenStore(ctxFor(t), nowhere, Options{})
	if err == nil || !strings.Contains(err.Error(), "no_such_dc") {
		t.Fatalf("Open with a datacenter the cluster lacks: %v; want an error naming it", err)
	}
	t.Logf("Open with LocalDC no_such_dc: %v", err)
}

// TestConfigTablets: the tablets mode defaults to auto, and another word
// is refused before connecting.
func TestConfigTablets(t *testing.T) {
	c, err := Config{Hosts: []string{"h"}}.withDefaults()
	if err != nil || c.Tablets != TabletsAuto {
		t.Fatalf("default tablets: %q, %v; want auto", c.Tablets, err)
	}
	if _, err := (Config{Hosts: []string{"h"}, Tablets: "true"}).withDefaults(); err == nil {
		t.Error(`tablets "true" accepted`)
	}
}
