package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	viewscylla "github.com/orderd/orderd/internal/readmodel/scylla"
	viewsqlite "github.com/orderd/orderd/internal/readmodel/sqlite"
	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/scylla"
	"github.com/orderd/orderd/internal/store/scylla/cdc"
	"github.com/orderd/orderd/internal/store/sqlite"
)

// backend is one ORDERD_STORE: the event store, the read models, and how
// their consumers are fed.
type backend struct {
	events    store.Store
	views     readmodel.Views
	projector *watched // nil when it cannot run (cdcOff)

	// With the embedded store the relay and the projector read the store's
	// own feed. With ScyllaDB they read its CDC log: cdcReader returns the
	// reader of one consumer. cdcOff says why the CDC consumers cannot run
	// ("" when they can): a CQL server that is not ScyllaDB has no CDC log.
	cdcReader func(app string, handle cdc.Handler) *cdc.Reader
	cdcOff    string

	ping  func(ctx context.Context) error // a real request to the store
	close func()
}

// hasFeed reports whether the store's own feed drives the consumers.
func (b *backend) hasFeed() bool { return b.cdcReader == nil }

func openBackend(ctx context.Context, cfg config, log *zap.Logger) (*backend, error) {
	if cfg.store == "scylla" {
		return openScylla(ctx, cfg, log)
	}
	events, err := sqlite.Open(filepath.Join(cfg.dataDir, "events.db"), sqlite.Options{
		Upcaster: aggregate.Upcasters(),
		Logger:   log.Named("store"),
	})
	if err != nil {
		return nil, err
	}
	views, err := viewsqlite.Open(filepath.Join(cfg.dataDir, "views.db"), log.Named("views"))
	if err != nil {
		events.Close()
		return nil, err
	}
	return &backend{
		events:    events,
		views:     views,
		projector: &watched{Service: readmodel.NewProjector(events, views, log.Named("projector"))},
		ping:      func(ctx context.Context) error { _, err := events.Head(ctx); return err },
		close:     func() { views.Close(); events.Close() },
	}, nil
}

func openScylla(ctx context.Context, cfg config, log *zap.Logger) (*backend, error) {
	scfg, err := cfg.scyllaConfig()
	if err != nil {
		return nil, err
	}
	events, err := scylla.Open(ctx, scfg, scylla.Options{Upcaster: aggregate.Upcasters(), Logger: log.Named("store")})
	if err != nil {
		return nil, err
	}
	views := viewscylla.New(events.Session(), events, log.Named("views"),
		viewscylla.WithConsistency(scfg.Consistency), viewscylla.WithSerialConsistency(scfg.SerialConsistency))
	b := &backend{
		events: events,
		views:  views,
		cdcReader: func(app string, handle cdc.Handler) *cdc.Reader {
			return cdc.New(cdc.Config{
				Session: events.Session().Session, Keyspace: events.Keyspace(), App: app,
				Window: cfg.cdcWindow, PollDelay: cfg.cdcPollDelay, IdleDelay: cfg.cdcIdleDelay, MaxAge: scfg.CDCTTL,
				Upcaster: aggregate.Upcasters(), Log: log.Named("cdc." + app),
			}, handle)
		},
		// Loading an aggregate nobody has is one real read of the events
		// table.
		ping:  func(ctx context.Context) error { _, err := events.Load(ctx, uuid.Nil, 0); return err },
		close: func() { events.Close() },
	}
	if !events.IsScylla() {
		b.cdcOff = "the CQL server is not ScyllaDB: it has no CDC log to feed the projector and the relay"
		log.Warn(b.cdcOff + "; commands and the event history work, the read models and Kafka do not")
		return b, nil
	}
	b.projector = &watched{Service: cdcWorker{b.cdcReader("projector", views.Project)}}
	return b, nil
}

// cdcWorker is a CDC reader as a supervised worker. It has no feed
// position, so readiness shows no lag for it.
type cdcWorker struct{ reader *cdc.Reader }

func (w cdcWorker) Serve(ctx context.Context) error { return w.reader.Serve(ctx) }
func (w cdcWorker) Position() int64                 { return 0 }

// scyllaConfig is the ScyllaDB part of the configuration.
func (c config) scyllaConfig() (scylla.Config, error) {
	var hosts []string
	for _, h := range strings.Split(c.scyllaHosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	if len(hosts) == 0 {
		return scylla.Config{}, errors.New("ORDERD_STORE=scylla needs ORDERD_SCYLLA_HOSTS")
	}
	cons, err := gocql.ParseConsistencyWrapper(c.scyllaConsistency)
	if err != nil {
		return scylla.Config{}, fmt.Errorf("scylla consistency: %w", err)
	}
	var serial gocql.Consistency
	if err := serial.UnmarshalText([]byte(strings.ToUpper(c.scyllaSerial))); err != nil || !serial.IsSerial() {
		return scylla.Config{}, fmt.Errorf("scylla serial consistency %q: want SERIAL or LOCAL_SERIAL", c.scyllaSerial)
	}
	return scylla.Config{
		Hosts: hosts, Keyspace: c.scyllaKeyspace, Replication: c.scyllaReplication,
		Consistency: cons, SerialConsistency: serial, CDCTTL: c.cdcTTL,
	}, nil
}
