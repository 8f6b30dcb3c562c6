package cql

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gocql/gocql"
	"github.com/scylladb/gocqlx/v3"
	gmigrate "github.com/scylladb/gocqlx/v3/migrate"
	"go.uber.org/zap"

	"github.com/orderd/orderd/migrations"
)

// Migrate creates the keyspace of cfg if it is missing and applies the
// schema files (migrations.Scylla) that the keyspace has not seen yet, as
// Open does, for `orderd migrate`. Applying them again is a no-op. It
// returns an error when the cluster cannot be reached or a file fails; a
// file that failed halfway resumes at its failed statement next time.
func Migrate(ctx context.Context, cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	sess, _, _, err := migrate(ctx, cfg, log)
	if err != nil {
		return err
	}
	sess.Close()
	return nil
}

// migrate prepares the keyspace and returns a session bound to it,
// whether the server is ScyllaDB and the keyspace's shard count.
func migrate(ctx context.Context, cfg Config, log *zap.Logger) (gocqlx.Session, bool, int, error) {
	// Schema changes wait for the cluster to agree on the schema, which
	// takes seconds on a busy cluster: their sessions have a timeout of
	// their own, longer than a request's, and the session returned, with
	// the requests' timeout, is opened once the schema is in place.
	ddl := cfg
	ddl.Timeout = max(cfg.Timeout, schemaTimeout)
	// The keyspace may not exist yet, and a session bound to a keyspace
	// cannot be opened before it does: a first session without one detects
	// the server and creates the keyspace.
	admin, err := connect(ddl, "", log)
	if err != nil {
		if cfg.LocalDC != "" {
			err = fmt.Errorf("%w (LocalDC is %q: the contact points must include nodes of that datacenter)", err, cfg.LocalDC)
		}
		return gocqlx.Session{}, false, 0, err
	}
	if cfg.LocalDC == "" {
		warnMultiDC(admin, cfg, log)
	}
	srv, err := detect(ctx, admin)
	if err == nil {
		err = createKeyspace(ctx, admin, cfg, srv, log)
	}
	admin.Close()
	if err != nil {
		return gocqlx.Session{}, false, 0, err
	}

	schema, err := connect(ddl, cfg.Keyspace, log)
	if err != nil {
		return schema, false, 0, err
	}
	err = applySchema(ctx, schema, cfg, srv.scylla, log)
	schema.Close()
	if err != nil {
		return gocqlx.Session{}, false, 0, err
	}
	sess, err := connect(cfg, cfg.Keyspace, log)
	if err != nil {
		return sess, false, 0, err
	}
	shards, err := readShards(ctx, sess, cfg, log)
	if err != nil {
		sess.Close()
		return gocqlx.Session{}, false, 0, err
	}
	return sess, srv.scylla, shards, nil
}

// schemaTimeout bounds each schema change (and the other requests of the
// sessions that make them).
const schemaTimeout = 30 * time.Second

// warnMultiDC warns when the driver sees nodes of several datacenters
// (from system.local and system.peers, which it read on connecting) and
// no LocalDC says which one is local: requests then go to any DC's nodes,
// and LOCAL_QUORUM and LOCAL_SERIAL mean whichever DC coordinates each.
func warnMultiDC(sess gocqlx.Session, cfg Config, log *zap.Logger) {
	seen := map[string]bool{}
	var dcs []string
	for _, h := range sess.Session.GetHosts() {
		if dc := h.DataCenter(); dc != "" && !seen[dc] {
			seen[dc] = true
			dcs = append(dcs, dc)
		}
	}
	if len(dcs) < 2 {
		return
	}
	slices.Sort(dcs)
	log.Warn("the cluster has several datacenters and no local one is set: each request goes to a node of any of them, "+
		"so a LOCAL_SERIAL append is serialised only within the coordinator's datacenter; "+
		"set the local datacenter, or SERIAL when aggregates are written from several",
		zap.Strings("datacenters", dcs), zap.Stringer("serial_consistency", cfg.SerialConsistency))
}

// detect tells which server sess talks to: ScyllaDB or Apache Cassandra,
// and ScyllaDB's own release. (system.local's release_version is, on
// ScyllaDB, the Cassandra release it is compatible with, such as 3.0.8.)
// It asks the node it reaches; on a cluster being upgraded, nodes differ.
func detect(ctx context.Context, sess gocqlx.Session) (server, error) {
	scylla, err := isScylla(ctx, sess)
	if err != nil || !scylla {
		return server{}, err
	}
	var version string
	err = sess.Session.Query(`SELECT version FROM system.versions WHERE key = 'local'`).
		WithContext(ctx).Idempotent(true).Scan(&version)
	code, answered := serverCode(err)
	switch {
	case err == nil:
	case errors.Is(err, gocql.ErrNotFound):
		// No row: an old release, as below.
	case answered && code == gocql.ErrCodeInvalid:
		// No such table: a release older than any with tablets.
	default:
		return server{}, fmt.Errorf("scylla: read the ScyllaDB version: %w", err)
	}
	return server{scylla: true, version: version}, nil
}

// isScylla tells ScyllaDB from Apache Cassandra by a table that only
// ScyllaDB has: system.scylla_local, its node-local key-value store, present
// in every ScyllaDB release since 2.x and never in Cassandra. Asking
// system_schema whether the table exists is an ordinary query that returns
// a row or none, so a network or server failure is an error rather than a
// wrong "no". The driver's own guess, from the SCYLLA_* options a node
// advertises when a connection starts, is taken too, in case a future
// release renames the table.
func isScylla(ctx context.Context, sess gocqlx.Session) (bool, error) {
	var name string
	err := sess.Session.Query(`SELECT table_name FROM system_schema.tables
		WHERE keyspace_name = 'system' AND table_name = 'scylla_local'`).
		WithContext(ctx).Idempotent(true).Scan(&name)
	switch {
	case err == nil:
		return true, nil
	case !errors.Is(err, gocql.ErrNotFound):
		return false, fmt.Errorf("scylla: detect the server: %w", err)
	}
	for _, h := range sess.Session.GetHosts() {
		if h.ScyllaFeatures().IsPresent() {
			return true, nil
		}
	}
	return false, nil
}

// createKeyspace creates cfg.Keyspace unless it exists, with or without
// tablets as cfg.Tablets and the server say (see createClause). Checking
// first lets a deployment whose user may not create keyspaces use one made
// by hand. An existing keyspace is left as it is, but one that uses
// tablets on a ScyllaDB that cannot run CDC and LWT on them is refused.
func createKeyspace(ctx context.Context, sess gocqlx.Session, cfg Config, srv server, log *zap.Logger) error {
	var name string
	err := sess.Session.Query(`SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?`, cfg.Keyspace).
		WithContext(ctx).Idempotent(true).Scan(&name)
	switch {
	case err == nil:
		return checkExisting(ctx, sess, cfg.Keyspace, srv)
	case !errors.Is(err, gocql.ErrNotFound):
		return fmt.Errorf("scylla: look up keyspace %s: %w", cfg.Keyspace, err)
	}
	clause, err := createClause(cfg.Tablets, srv, cfg.Replication)
	if err != nil {
		return fmt.Errorf("scylla: create keyspace %s: %w", cfg.Keyspace, err)
	}
	stmt := fmt.Sprintf("CREATE KEYSPACE IF NOT EXISTS %s WITH replication = %s%s", cfg.Keyspace, cfg.Replication, clause)
	if err := sess.Session.Query(stmt).WithContext(ctx).Exec(); err != nil {
		if clause == tabletsOff {
			err = fmt.Errorf("%w (if the cluster sets tablets_mode_for_new_keyspaces: enforced, it refuses a keyspace "+
				"without tablets: %s)", err, enforcedFix(srv, cfg.Replication))
		}
		return fmt.Errorf("scylla: create keyspace %s: %w", cfg.Keyspace, err)
	}
	log.Info("created keyspace", zap.String("keyspace", cfg.Keyspace), zap.Bool("scylla", srv.scylla),
		zap.String("version", srv.version), zap.String("tablets", string(cfg.Tablets)), zap.String("clause", clause))
	return nil
}

// checkExisting refuses an existing keyspace that uses tablets on a
// ScyllaDB older than 2025.4, where neither the events table's CDC log nor
// its LWT appends work on tablets.
func checkExisting(ctx context.Context, sess gocqlx.Session, keyspace string, srv server) error {
	sup, err := srv.tablets()
	if err != nil || sup != tabletsWithoutCDC {
		return err // Cassandra and ScyllaDB before 6.0 have no tablets; 2025.4 does all
	}
	// A keyspace with tablets has an initial_tablets value (0 when the
	// count is left to ScyllaDB); one without has a null or no row.
	var initial *int
	err = sess.Session.Query(`SELECT initial_tablets FROM system_schema.scylla_keyspaces WHERE keyspace_name = ?`, keyspace).
		WithContext(ctx).Idempotent(true).Scan(&initial)
	switch {
	case errors.Is(err, gocql.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("scylla: read the tablets settings of keyspace %s: %w", keyspace, err)
	case initial == nil:
		return nil
	}
	return fmt.Errorf("scylla: keyspace %s uses tablets, and ScyllaDB %s runs neither CDC nor lightweight transactions "+
		"on tablets (2025.4 does): upgrade ScyllaDB to 2025.4 or newer, or create the keyspace again with "+
		"tablets = {'enabled': false} and copy the data over: %w", keyspace, srv.version, ErrTablets)
}

// applySchema runs gocqlx/migrate over migrations.Scylla on sess, which is
// bound to the keyspace. migrate records each file, its checksum and how
// many of its statements are done in the keyspace's gocqlx_migrate table.
func applySchema(ctx context.Context, sess gocqlx.Session, cfg Config, scylla bool, log *zap.Logger) error {
	dir, err := fs.Sub(migrations.Scylla, "scylla")
	if err != nil {
		return fmt.Errorf("scylla: migrations: %w", err)
	}
	installCallback()
	env := &schemaEnv{scylla: scylla, cdcTTL: cfg.CDCTTL, shards: cfg.Shards, log: log}
	if err := gmigrate.FromFS(context.WithValue(ctx, schemaEnvKey{}, env), sess, dir); err != nil {
		return fmt.Errorf("scylla: migrate keyspace %s: %w", cfg.Keyspace, err)
	}
	return nil
}

// schemaEnv is what the callbacks of one migration run need to know. It
// travels in the context, because migrate.Callback is a single global
// variable while several stores, with different servers and settings, may
// migrate at once.
type schemaEnv struct {
	scylla bool
	cdcTTL time.Duration
	shards int // Config.Shards, for fix_shards
	log    *zap.Logger
}

type schemaEnvKey struct{}

var callbackOnce sync.Once

// installCallback sets migrate.Callback, once, to a dispatcher that serves
// the migrations run by this package (recognised by the schemaEnv in their
// context) and hands any other call to the callback that was set before,
// so that another package using gocqlx/migrate keeps working if it
// installed its own first. (One that installs its own later replaces this
// one; such a package should chain the same way.)
func installCallback() {
	callbackOnce.Do(func() {
		prev := gmigrate.Callback
		gmigrate.Callback = func(ctx context.Context, sess gocqlx.Session, ev gmigrate.CallbackEvent, name string) error {
			env, ok := ctx.Value(schemaEnvKey{}).(*schemaEnv)
			switch {
			case ok:
				return env.callbacks().Callback(ctx, sess, ev, name)
			case prev != nil:
				return prev(ctx, sess, ev, name)
			case ev == gmigrate.CallComment:
				return fmt.Errorf("no handler for -- CALL %s", name)
			}
			return nil
		}
	})
}

// callbacks returns the handlers of the "-- CALL name;" lines of the schema
// files.
func (env *schemaEnv) callbacks() gmigrate.CallbackRegister {
	r := gmigrate.CallbackRegister{}
	r.Add(gmigrate.CallComment, "enable_cdc", env.enableCDC)
	r.Add(gmigrate.CallComment, "fix_shards", env.fixShards)
	return r
}

// enableCDC turns on ScyllaDB's CDC log of the events table, the fast path
// of this backend's change feed (package cdc). Cassandra has CDC of another
// kind (commit log segments on the node's disk, no CQL-readable log) and no
// cdc table option of this form, so there the table is left as it is, and
// the feed's fast path is its hints.
func (env *schemaEnv) enableCDC(ctx context.Context, sess gocqlx.Session, _ gmigrate.CallbackEvent, _ string) error {
	if !env.scylla {
		env.log.Info("not ScyllaDB: the events table has no CDC log")
		return nil
	}
	ttl := int64(env.cdcTTL / time.Second)
	stmt := fmt.Sprintf("ALTER TABLE events WITH cdc = {'enabled': true, 'ttl': %d}", ttl)
	if err := sess.ContextQuery(ctx, stmt, nil).ExecRelease(); err != nil {
		return fmt.Errorf("enable CDC: %w", err)
	}
	env.log.Info("enabled CDC on the events table", zap.Duration("ttl", env.cdcTTL))
	return nil
}

// TabletsMode says whether a keyspace that Open or Migrate creates uses
// tablets, ScyllaDB's data distribution that replaces vnodes: tablets exist
// from ScyllaDB 6.0 (and Enterprise 2024.2), are the default for new
// keyspaces from 2025.1, and carry CDC and lightweight transactions, which
// this store needs, only from 2025.4. A cluster may also refuse keyspaces
// without them (tablets_mode_for_new_keyspaces: enforced). Apache Cassandra
// and ScyllaDB before 6.0 refuse the option itself ("Unknown property
// 'tablets'").
type TabletsMode string

const (
	// TabletsAuto lets ScyllaDB 2025.4 and newer choose (tablets, unless
	// the cluster's default says otherwise; vnodes when the replication is
	// not NetworkTopologyStrategy), disables tablets from 6.0 to 2025.3,
	// and names no tablets at all elsewhere.
	TabletsAuto TabletsMode = "auto"
	// TabletsOn asks for tablets, and refuses to create the keyspace on a
	// server older than ScyllaDB 2025.4 (or on Cassandra), or with a
	// replication other than NetworkTopologyStrategy.
	TabletsOn TabletsMode = "on"
	// TabletsOff disables tablets on ScyllaDB 6.0 and newer, and names no
	// tablets where the server has none. An enforcing cluster refuses it.
	TabletsOff TabletsMode = "off"
)

// ErrTablets is wrapped by the errors of a tablets setting that the
// server cannot honour, or of an existing keyspace that uses tablets on a
// server that cannot run this store on them.
var ErrTablets = errors.New("tablets not supported for this store")

// The CREATE KEYSPACE clauses that set tablets.
const (
	tabletsOn  = " AND tablets = {'enabled': true}"
	tabletsOff = " AND tablets = {'enabled': false}"
)

// server is what the schema depends on: the product, and ScyllaDB's own
// release, such as "2025.4.1-0.20251201.1234abcd" or "6.2.3" ("" on
// Cassandra, and on a ScyllaDB too old to say).
type server struct {
	scylla  bool
	version string
}

// tabletSupport is what a server can do with tablets.
type tabletSupport int

const (
	noTablets         tabletSupport = iota // Cassandra, ScyllaDB before 6.0: the option is unknown
	tabletsWithoutCDC                      // 6.0 to 2025.3: tablets, but neither CDC nor LWT on them
	tabletsWithCDC                         // 2025.4 and newer
)

// releaseNumber is the leading major.minor of a ScyllaDB release, the rest
// (patch, ~rc1, ~dev, build) being of no concern here.
var releaseNumber = regexp.MustCompile(`^(\d+)(?:\.(\d+))?`)

// tablets returns what srv can do with tablets, from its release: open
// source 6.x (6.0 to 6.2) have tablets without CDC and LWT on them;
// Enterprise releases are numbered by year, and 2024.2, based on 6.0, is
// the first with tablets; 2025.1 merged both lines, and 2025.4 runs CDC and
// LWT on tablets.
func (srv server) tablets() (tabletSupport, error) {
	if !srv.scylla || srv.version == "" {
		return noTablets, nil
	}
	m := releaseNumber.FindStringSubmatch(srv.version)
	if m == nil {
		return 0, fmt.Errorf("scylla: ScyllaDB version %q: want major.minor first: %w", srv.version, ErrTablets)
	}
	major, _ := strconv.Atoi(m[1]) // digits only: fails on nothing a release says
	minor, _ := strconv.Atoi(m[2]) // "" when absent: 0
	at := func(ma, mi int) bool { return major > ma || major == ma && minor >= mi }
	switch {
	case major < 6:
		return noTablets, nil
	case major < 2000: // open source 6.x
		return tabletsWithoutCDC, nil
	case !at(2024, 2):
		return noTablets, nil
	case !at(2025, 4):
		return tabletsWithoutCDC, nil
	}
	return tabletsWithCDC, nil
}

// String names srv for messages.
func (srv server) String() string {
	switch {
	case !srv.scylla:
		return "Apache Cassandra"
	case srv.version == "":
		return "ScyllaDB (version unknown, older than 6.0)"
	}
	return "ScyllaDB " + srv.version
}

// createClause returns what CREATE KEYSPACE adds after replication for
// mode on srv: a tablets clause or nothing. Tablets need
// NetworkTopologyStrategy (recent releases refuse SimpleStrategy with
// tablets), so with another replication class the keyspace gets vnodes.
// It fails, wrapping ErrTablets, when the server cannot run this store the
// way mode asks.
func createClause(mode TabletsMode, srv server, replication string) (string, error) {
	sup, err := srv.tablets()
	if err != nil {
		return "", err
	}
	nts := isNTS(replication)
	switch mode {
	case TabletsAuto:
		if sup == tabletsWithoutCDC || sup == tabletsWithCDC && !nts {
			return tabletsOff, nil
		}
		return "", nil
	case TabletsOn:
		switch {
		case sup != tabletsWithCDC:
			return "", fmt.Errorf("tablets=on needs ScyllaDB 2025.4 or newer, which runs CDC and lightweight "+
				"transactions on tablets; the server is %s: use tablets=auto or off: %w", srv, ErrTablets)
		case !nts:
			return "", fmt.Errorf("tablets=on needs NetworkTopologyStrategy replication, not %s: %w", replication, ErrTablets)
		}
		return tabletsOn, nil
	case TabletsOff:
		if sup == noTablets {
			return "", nil
		}
		return tabletsOff, nil
	}
	return "", fmt.Errorf("tablets %q: want auto, on or off: %w", mode, ErrTablets)
}

// isNTS reports whether a CQL replication map names NetworkTopologyStrategy,
// the only class tablets work with.
func isNTS(replication string) bool {
	return strings.Contains(strings.ToLower(replication), "networktopologystrategy")
}

// enforcedFix says what to do when a cluster that enforces tablets
// refuses a keyspace without them.
func enforcedFix(srv server, replication string) string {
	sup, _ := srv.tablets()
	switch {
	case sup == tabletsWithCDC && !isNTS(replication):
		return "use NetworkTopologyStrategy replication, which tablets need"
	case sup == tabletsWithCDC:
		return "use tablets=auto or on"
	}
	return fmt.Sprintf("%s runs neither CDC nor lightweight transactions on tablets: upgrade to 2025.4 or newer, "+
		"or set tablets_mode_for_new_keyspaces to disabled or enabled, or create the keyspace by hand", srv)
}
