package main

import (
	"context"
	"io"

	"go.uber.org/zap"
)

// runMigrate is `orderd migrate`: it brings the configured store's schema up
// to date and exits, so that a deployment can migrate before it starts the
// service (which migrates at start as well). On ScyllaDB it creates the
// keyspace when missing. Opening the engine applies every migration (the
// event store's, the relay's and the read models'), on either engine.
func runMigrate(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	defer func() { _ = log.Sync() }()
	b, err := openBackend(ctx, cfg, log)
	if err != nil {
		return err
	}
	if err := b.Close(); err != nil {
		return err
	}
	log.Info("schema up to date", zap.String("store", cfg.store))
	return nil
}
