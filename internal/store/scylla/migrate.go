package scylla

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
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
func Migrate(ctx context.Context, cfg Config, log *zap.Logger) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	if log == nil {
		log = zap.NewNop()
	}
	sess, _, err := migrate(ctx, cfg, log)
	if err != nil {
		return err
	}
	sess.Close()
	return nil
}

// migrate prepares the keyspace and returns a session bound to it, and
// whether the server is ScyllaDB.
func migrate(ctx context.Context, cfg Config, log *zap.Logger) (gocqlx.Session, bool, error) {
	// The keyspace may not exist yet, and a session bound to a keyspace
	// cannot be opened before it does: a first session without one detects
	// the server and creates the keyspace.
	admin, err := connect(cfg, "", log)
	if err != nil {
		return gocqlx.Session{}, false, err
	}
	scylla, err := isScylla(ctx, admin)
	if err == nil {
		err = createKeyspace(ctx, admin, cfg, scylla, log)
	}
	admin.Close()
	if err != nil {
		return gocqlx.Session{}, false, err
	}

	sess, err := connect(cfg, cfg.Keyspace, log)
	if err != nil {
		return sess, false, err
	}
	if err := applySchema(ctx, sess, cfg, scylla, log); err != nil {
		sess.Close()
		return sess, false, err
	}
	return sess, scylla, nil
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

// createKeyspace creates cfg.Keyspace unless it exists. Checking first lets
// a deployment whose user may not create keyspaces use one made by hand.
//
// On ScyllaDB the keyspace is made without tablets: lightweight transactions
// on tablets need ScyllaDB 2025.4 or newer, and so does CDC. This needs
// ScyllaDB 6.0 or newer, which knows the option. An existing keyspace is
// left as it is.
func createKeyspace(ctx context.Context, sess gocqlx.Session, cfg Config, scylla bool, log *zap.Logger) error {
	var name string
	err := sess.Session.Query(`SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?`, cfg.Keyspace).
		WithContext(ctx).Idempotent(true).Scan(&name)
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, gocql.ErrNotFound):
		return fmt.Errorf("scylla: look up keyspace %s: %w", cfg.Keyspace, err)
	}
	stmt := fmt.Sprintf("CREATE KEYSPACE IF NOT EXISTS %s WITH replication = %s", cfg.Keyspace, cfg.Replication)
	if scylla {
		stmt += " AND tablets = {'enabled': false}"
	}
	if err := sess.Session.Query(stmt).WithContext(ctx).Exec(); err != nil {
		return fmt.Errorf("scylla: create keyspace %s: %w", cfg.Keyspace, err)
	}
	log.Info("created keyspace", zap.String("keyspace", cfg.Keyspace), zap.Bool("scylla", scylla))
	return nil
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
	env := &schemaEnv{scylla: scylla, cdcTTL: cfg.CDCTTL, log: log}
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
	return r
}

// enableCDC turns on ScyllaDB's CDC log of the events table, which is this
// backend's change feed. Cassandra has CDC of another kind (commit log
// segments on the node's disk, no CQL-readable log) and no cdc table option
// of this form, so there the table is left as it is.
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
