package main

import (
	"context"
	"io"

	"go.uber.org/zap"

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
	if cfg.store == "scylla" {
		// The relay's and the read models' tables are in the keyspace's
		// schema too.
		if err := scylla.Migrate(ctx, cfg.scylla, log.Named("store")); err != nil {
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
	log.Info("schema up to date", zap.String("store", cfg.store))
	return nil
}
