package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"go.uber.org/zap"

	relaysqlite "github.com/orderd/orderd/internal/relay/sqlite"
	"github.com/orderd/orderd/internal/store/scylla"
)

// runMigrate is `orderd migrate`: it brings the configured store's schema up
// to date and exits, so that a deployment can migrate before it starts the
// service (which migrates at start as well). On ScyllaDB it creates the
// keyspace when missing.
func runMigrate(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	defer func() { _ = log.Sync() }()
	if err := os.MkdirAll(cfg.dataDir, 0o750); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if cfg.store == "scylla" {
		scfg, err := cfg.scyllaConfig()
		if err != nil {
			return err
		}
		if err := scylla.Migrate(ctx, scfg, log.Named("store")); err != nil {
			return err
		}
	} else {
		// Opening the embedded databases applies their migrations.
		b, err := openBackend(ctx, cfg, log)
		if err != nil {
			return err
		}
		b.close()
	}
	ledger, err := relaysqlite.Open(filepath.Join(cfg.dataDir, "relay.db"), log.Named("ledger"))
	if err != nil {
		return err
	}
	log.Info("schema up to date", zap.String("store", cfg.store))
	return ledger.Close()
}
