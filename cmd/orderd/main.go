// Command orderd is the event-sourced order service: an HTTP API for order
// and customer commands and queries, an event store that is its own outbox,
// and the in-process workers that tail the store's change feed.
//
//	go run ./cmd/orderd            # serve on :8080 with the store in ./data
//	go run ./cmd/orderd -help      # every flag and its ORDERD_ variable
//	go run ./cmd/orderd dlq list   # the dead letters of a running orderd
//	orderd healthcheck             # exit 0 when the local orderd answers /healthz
//	orderd migrate                 # bring the store's schema up to date and exit
//	orderd export -to log.ndjson.gz # write the whole event log to a file
//	orderd import -from log.ndjson.gz # load such a file into the configured store
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/orderd/orderd"
	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/api"
	"github.com/orderd/orderd/internal/cli"
	"github.com/orderd/orderd/internal/console"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/telemetry"
	"github.com/orderd/orderd/internal/worker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal the default action is back: a second one ends
	// a drain that hangs.
	context.AfterFunc(ctx, stop)
	args, sub := os.Args[1:], ""
	if len(args) > 0 {
		sub = args[0]
	}
	var err error
	switch sub {
	case "help":
		usage(os.Stdout)
		return
	case "dlq":
		// The clients of a running orderd; they print their own errors.
		if cli.DLQ(ctx, args[1:], os.Getenv, os.Stdout, os.Stderr) != nil {
			os.Exit(1)
		}
		return
	case "rebuild":
		if cli.Rebuild(ctx, args[1:], os.Getenv, os.Stdout, os.Stderr, isTerminal(os.Stdout)) != nil {
			os.Exit(1)
		}
		return
	case "bench":
		// Progress goes to stderr, so that the report alone is on stdout.
		if cli.Bench(ctx, args[1:], os.Getenv, os.Stdout, os.Stderr, isTerminal(os.Stderr)) != nil {
			os.Exit(1)
		}
		return
	case "healthcheck":
		if cli.Healthcheck(ctx, args[1:], os.Getenv, os.Stderr) != nil {
			os.Exit(1)
		}
		return
	case "backup":
		if cli.Backup(ctx, args[1:], os.Getenv, os.Stdout, os.Stderr, isTerminal(os.Stdout)) != nil {
			os.Exit(1)
		}
		return
	case "migrate":
		err = runMigrate(ctx, args[1:], os.Getenv, os.Stderr)
	case "export":
		err = runExport(ctx, args[1:], os.Getenv, os.Stdout, os.Stderr)
	case "import":
		err = runImport(ctx, args[1:], os.Getenv, os.Stdin, os.Stderr)
	case "restore":
		err = runRestore(args[1:], os.Getenv, os.Stdout, os.Stderr)
	default:
		if os.Getenv("GOGC") == "" {
			debug.SetGCPercent(serverGCPercent)
		}
		err = run(ctx, args, os.Getenv, os.Environ(), os.Stderr, nil)
	}
	if errors.Is(err, flag.ErrHelp) {
		return // -help printed the usage
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "orderd:", err)
		os.Exit(1)
	}
}

// serverGCPercent is the garbage collector's GOGC for the server, unless
// GOGC is set. orderd's live heap is small (tens of MB) and its requests
// allocate briskly, so at Go's default of 100 it collects very often: with
// 400, wrk's CreateOrder at 64 connections ran 13,100–14,100/s against
// 11,400–11,900/s, with an RSS of 55 MiB against 41–43 MiB (1,000 gave no
// clear further gain for 80 MiB). The memory limit (GOMEMLIMIT, or 90% of
// the container's cgroup limit: see applyMemoryLimit) still makes it
// collect sooner as the heap nears it.
const serverGCPercent = 400

// commandsUsage heads orderd's -help, before the flags.
const commandsUsage = `usage: orderd [flags]              serve the API and run the workers
       orderd migrate [flags]      bring the store's schema up to date and exit
       orderd export -to FILE [-gzip] [flags]
                                   write the store's whole event log to FILE (- for stdout; .gz: gzip)
       orderd import -from FILE [-published] [flags]
                                   load an export into the store, resumably; -published: the relay
                                   counts the imported events as published already
       orderd healthcheck [flags]  exit 0 when the orderd on -http-addr answers /healthz
       orderd dlq <command> ...    list, show, replay or discard dead letters (orderd dlq -help)
       orderd rebuild [command]    rebuild the read models blue/green, with progress (orderd rebuild -help)
       orderd backup -to DIR       copy a running embedded orderd into DIR on its host (orderd backup -help)
       orderd restore -from DIR    fill the empty -data-dir from a backup, checked against its manifest
       orderd bench [flags]        load a running orderd and report throughput and latency (orderd bench -help)
       orderd help                 this text

orderd, orderd migrate, export and import take the flags below; the other subcommands have
flags of their own (orderd <command> -help). Every flag has an ORDERD_
environment variable, shown with its default; a flag given on the command
line wins. Durations are written 500ms, 2s, 1m30s.
`

// usage prints commandsUsage and the flags to w.
func usage(w io.Writer) {
	_, _ = parseConfig([]string{"-help"}, func(string) string { return "" }, w)
}

// isTerminal reports whether f is a terminal (a character device), where
// progress may be redrawn in place.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// headerLimit bounds a request's head, its request line and headers (Go's
// default is 1 MiB); 16 KiB holds every header the API takes with room to
// spare. A longer head is answered 431.
const headerLimit = 16 << 10

// maxHeaderBytes is http.Server's setting for headerLimit: net/http reads
// MaxHeaderBytes plus 4096 bytes of slack (its buffer's) before it refuses
// a head, so the setting is 4 KiB under the limit it then enforces.
const maxHeaderBytes = headerLimit - 4096

// run is orderd from configuration to shutdown. It serves until ctx ends,
// then drains within the shutdown timeout: HTTP first, so that every
// accepted command is answered, then the workers, which finish the batch
// in flight and catch up with the head before they save their progress,
// then the stores. environ is the environment as os.Environ lists it, in
// which an ORDERD_ variable that orderd does not read is warned about (nil:
// no check). onListen, when set, learns the bound address (tests listen on
// port 0).
func run(ctx context.Context, args []string, getenv func(string) string, environ []string, stderr io.Writer, onListen func(net.Addr)) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	defer func() { _ = log.Sync() }()
	applyMemoryLimit(getenv, os.DirFS("/"), log)
	for _, v := range unknownVariables(environ) {
		fields := []zap.Field{zap.String("variable", v.name)}
		if v.near != "" {
			fields = append(fields, zap.String("did_you_mean", v.near))
		}
		log.Warn("unknown ORDERD_ variable, ignored", fields...)
	}

	shutdownTracing, err := setupTracing(ctx, cfg, getenv, log)
	if err != nil {
		return err
	}
	defer func() {
		// Last, after the workers: their spans are flushed too.
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdownTracing(fctx); err != nil {
			log.Warn("tracing: flushing the last spans failed", zap.Error(err))
		}
	}()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	b, err := openBackend(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer func() { _ = b.Close() }()
	keyring, err := newKeyring(ctx, cfg, b, log.Named("keys"))
	if err != nil {
		return err
	}
	claims, err := keyring.ClaimSecret(ctx)
	if err != nil {
		return err
	}
	// The workers follow the feed through drain, so that a graceful
	// shutdown finishes their work in flight (see worker.DrainingFeed).
	// SQLite's Lag is exact; on CQL a drain finishes the batch in hand.
	drain := worker.NewDrainingFeed(b.feed, b.ExactLag())
	b.feed = drain
	rp, err := newRelay(cfg, b, reg, log.Named("relay"))
	if err != nil {
		return err
	}
	if rp.kafka != nil {
		defer rp.kafka.Close()
	}

	// Each worker is split into the engine's shards (one on SQLite), and
	// each shard runs on the one instance that holds its lease; the
	// instances share the shards out (worker.Balanced). Each worker has a
	// supervisor of its own (a relay failing while Kafka is down must not
	// spend the failure budget that restarts the projector), which waits
	// for its shards' drain (up to the shutdown timeout) before giving up
	// on them.
	stopWait := cfg.shutdownTimeout + 5*time.Second
	workers := worker.NewSupervisor("orderd", stopWait, log)
	shards := 1
	if s, ok := b.events.(store.Sharded); ok {
		shards = s.Shards()
	}
	balance := func(name string, work func(context.Context) error) *worker.Balanced {
		return worker.NewBalanced(b.events, b.events, name, cfg.instance, shards, cfg.leaseTTL, stopWait, work, log.Named(name))
	}
	// The rebuilds of the read models run on one instance of the cluster,
	// under the whole projector's lease: inside the projector itself when
	// it is not split (during a rebuild its batches reach the new
	// generation too), else as a worker of their own under the lease named
	// "projector" (no shard's lease is), which keeps the epochs the current
	// generation's row was stamped with.
	// Split, the projector's other instances write the generation a
	// rebuild builds once their Live.Track (every trackEvery) sees it
	// catching up: the catch-up waits for them.
	opts := readmodel.RebuildOptions{Grace: cfg.rebuildGrace}
	if shards > 1 {
		opts.FollowWait = 3 * trackEvery
	}
	rebuilder := readmodel.NewRebuilder(b.catalog, b.events, b.views, opts, log.Named("rebuild"))
	rebuild := func(ctx context.Context) error { return rebuilder.Serve(ctx, cfg.instance+"/"+uuid.NewString()) }
	project := func(ctx context.Context) error {
		return b.feed.Subscribe(ctx, projectorConsumer, telemetry.Linked("project", b.views.Apply))
	}
	var rebuildWorker *worker.Elected
	switch {
	case cfg.noProjector:
		// Neither the projector nor the rebuilds: -workers leaves them to
		// the instances that run the projector.
	case shards > 1:
		rebuildWorker = worker.NewElected(b.events, "projector", cfg.instance, cfg.leaseTTL, rebuild, log.Named("rebuild"))
		rebuildSup := worker.NewSupervisor("rebuild", stopWait, log)
		rebuildSup.Add(rebuildWorker)
		workers.Add(rebuildSup)
	default:
		subscribe := project
		project = func(ctx context.Context) error {
			g, ctx := errgroup.WithContext(ctx)
			g.Go(func() error { return rebuild(ctx) })
			g.Go(func() error { return subscribe(ctx) })
			return g.Wait()
		}
	}
	var projector, relayWorker *worker.Balanced
	var balanced workerCollector
	if !cfg.noProjector {
		projector = balance("projector", project)
		workers.Add(projector)
		balanced = append(balanced, projector)
	}
	// The lag is the consumer's, whichever instance runs it.
	consumers := []string{projectorConsumer}
	if rp.work != nil && !cfg.noRelay {
		// Split, an instance whose relay stepped down takes its shards
		// back once Kafka answers it, not before.
		relayWorker = balance(relay.Consumer, rp.work).RejoinWhen(rp.reach)
		workers.Add(relayWorker)
		balanced = append(balanced, relayWorker)
	}
	if rp.work != nil {
		consumers = append(consumers, relay.Consumer)
	}
	reg.MustRegister(&deadLetterCollector{ledger: b.ledger}, &lagCollector{feed: b.feed, consumers: consumers},
		storageFaultCollector{health: b.events}, balanced)
	if sl, ok := b.events.(shardLagger); ok && shards > 1 {
		reg.MustRegister(&shardLagCollector{lag: sl, workers: balanced})
	}
	if b.hintsDropped != nil {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "orderd_feed_hints_dropped_total",
			Help: "Hints of new appends not written because their queue was full (Apache Cassandra); the reconciliation pass delivers those appends instead.",
		}, func() float64 { return float64(b.hintsDropped()) }))
	}
	if b.handOffsDropped != nil {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "orderd_feed_handoffs_dropped_total",
			Help: "Appends of this instance not handed in memory to its own workers because a shard's queue was full (CQL); the hints, the CDC log and the reconciliation deliver those appends instead, with a read.",
		}, func() float64 { return float64(b.handOffsDropped()) }))
	}
	if r := b.reconciliation; r != nil {
		reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "orderd_feed_reconcile_failures_total",
				Help: "Failed reads of the reconciliation (a recent pass or a range of the full sweep); each is retried, none ends the feed.",
			}, func() float64 { return float64(r().Failures) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "orderd_feed_reconcile_recent_rows_total",
				Help: "Rows of the index of touched aggregates read by the recent passes.",
			}, func() float64 { return float64(r().RecentRows) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "orderd_feed_reconcile_sweep_rows_total",
				Help: "Aggregates read by the full sweeps of the token ring.",
			}, func() float64 { return float64(r().SweepRows) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "orderd_store_clock_skew_seconds",
				Help: "The clock of a CQL node minus this instance's, as last measured; the reconciliation's margins assume it stays within ORDERD_CLOCK_SKEW.",
			}, func() float64 { return r().ClockSkew.Seconds() }),
		)
	}

	commands := aggregate.NewHandler(b.events, time.Now, aggregate.WithLogger(log.Named("aggregate")),
		aggregate.WithSnapshots(b.snaps, int64(cfg.snapshotEvery)), aggregate.WithAppended(appendedCounter(reg)),
		aggregate.WithPersonalData(keyring, claims.ID), aggregate.WithEmailClaims(b.claims))
	queries := readmodel.NewQueries(b.views, b.events, cfg.readWait, b.ReadPoll()).WithMaxWaiters(cfg.maxWaiters).WithKeys(keyring)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "orderd_read_waiters",
		Help: "GETs with min_version waiting for the projection now (at most ORDERD_MAX_WAITERS).",
	}, func() float64 { return float64(queries.Waiting()) }))
	conns := api.NewConns(cfg.maxConns, reg)
	// A stream holds its connection busy for good: at most half of them,
	// so that streams can never take every connection from commands.
	stream := api.NewStream(openLog(b.positions, keyring), api.StreamOptions{MaxClients: min(1000, max(1, cfg.maxConns/2))}, reg, log.Named("stream"))
	defer stream.Stop()
	var limit *api.RateLimiter
	if cfg.rateLimit > 0 {
		// A client is its token's subject, else its address (api.ClientKey).
		limit = api.NewRateLimiter(api.RateLimitOptions{Rate: cfg.rateLimit, Burst: cfg.rateBurst}, reg)
	}
	ui, err := console.New()
	if err != nil {
		return err
	}
	ui.WithTraceURL(cfg.traceUI)
	tokens, err := newTokens(ctx, cfg, log)
	if err != nil {
		return err
	}
	// History, time travel and idempotent replays read the events with
	// their personal fields decrypted.
	server := api.New(commands, queries, aggregate.Sealed(b.events, keyring), readiness(b, projector, rebuildWorker, relayWorker, rp, tokens), orderd.OpenAPI, log.Named("http"))
	if tokens != nil {
		server.WithTokens(tokens)
	}
	handler := server.
		WithMetrics(api.NewMetrics(reg), reg).
		WithAsyncAPI(orderd.AsyncAPI).
		WithAdmin(rp.relay, cfg.adminToken).
		WithKeys(keyring).
		WithRebuilds(rebuilder).
		WithBackups(b.backups).
		WithIdempotency(api.NewIdempotency(b.keys, b.events, api.IdempotencyOptions{TTL: cfg.idempotencyTTL, Instance: cfg.instance})).
		WithStream(stream).
		WithConsole(ui).
		WithRateLimit(limit).
		Handler()
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second, // above the longest min_version wait (2 s) and dead-letter replay (20 s)
		// An idle keep-alive connection holds a file descriptor: 30 s is
		// plenty for a client's next request, and conns closes the longest
		// idle ones first when the cap is reached.
		IdleTimeout:    30 * time.Second,
		MaxHeaderBytes: maxHeaderBytes,
		ConnState:      conns.Track,
		ErrorLog:       zap.NewStdLog(log.Named("http")),
	}
	// Streams never end by themselves: Shutdown ends them at once rather
	// than waiting for its deadline.
	srv.RegisterOnShutdown(stream.Stop)
	ln, err := net.Listen("tcp", cfg.httpAddr)
	if err != nil {
		return err
	}
	ln = conns.Listener(ln)
	log.Info("orderd listening", zap.String("addr", ln.Addr().String()), zap.String("console", consoleURL(ln.Addr())),
		zap.String("instance", cfg.instance), zap.String("store", cfg.store), zap.String("data_dir", cfg.dataDir),
		zap.Int("max_conns", conns.Max()), zap.Float64("rate_limit", cfg.rateLimit), zap.Int("rate_burst", cfg.rateBurst))
	if onListen != nil {
		onListen(ln.Addr())
	}

	if cfg.debugAddr != "" {
		stopDebug, err := serveDebug(cfg.debugAddr, log)
		if err != nil {
			return err
		}
		defer stopDebug()
	}

	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	workDone := workers.ServeBackground(workCtx)
	if b.SharedViews() {
		go b.views.Track(workCtx, b.catalog, trackEvery)
	}
	httpDone := make(chan error, 1)
	go func() { httpDone <- srv.Serve(ln) }()

	select {
	case err = <-httpDone:
		err = fmt.Errorf("http: %w", err)
	case <-ctx.Done():
		// One deadline for both stages: HTTP drains first, so that no
		// command is appended after, then the workers finish what is in
		// flight and catch up with the head (worker.DrainingFeed).
		log.Info("shutting down")
		deadline := time.Now().Add(cfg.shutdownTimeout)
		sctx, cancel := context.WithDeadline(context.Background(), deadline)
		err = srv.Shutdown(sctx)
		cancel()
		if b.SharedLeases() {
			// A worker that drains does not renew its lease: it stops
			// while the lease it renewed last still holds (at least 2/3
			// of the TTL), before a standby may take over.
			if lease := time.Now().Add(cfg.leaseTTL / 2); lease.Before(deadline) {
				deadline = lease
			}
		}
		drain.Begin(deadline)
	}
	stopWork()
	if werr := <-workDone; werr != nil && !errors.Is(werr, context.Canceled) {
		err = errors.Join(err, werr)
	}
	log.Info("stopped")
	return err
}

// trackEvery is how often an instance on shared read models looks at the
// catalog for a switch or a rebuild another instance made
// (readmodel.Live.Track).
const trackEvery = time.Second

// consoleURL is the address of the console served on addr, for a browser
// on this host: an unspecified host (":8080", "0.0.0.0", "::") is
// localhost.
func consoleURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port) + console.Prefix
}

// serveDebug serves Go's profiler on addr, apart from the API, so that a
// CPU profile can be taken under load (go tool pprof
// http://ADDR/debug/pprof/profile?seconds=10). It returns a function that
// stops it.
func serveDebug(addr string, log *zap.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("debug: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("profiler listening", zap.String("addr", ln.Addr().String()))
	return func() { _ = srv.Close() }, nil
}
