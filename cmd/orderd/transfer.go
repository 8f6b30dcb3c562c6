package main

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/cql"
	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/transfer"
)

// transferStore is what export and import need of the configured store.
type transferStore interface {
	store.Store
	store.Log
	transfer.Marker
}

// transferPorts are the ports of the configured engine that export and
// import read and write: the log, then the rows kept beside it.
type transferPorts struct {
	st     transferStore
	keys   store.DataKeys
	claims store.EmailClaims
	close  func() error // closes the whole engine
}

// openTransferStore opens the engine of cfg.store (its schemas brought up
// to date), its event store without an upcaster, so that events read back
// exactly as they are stored.
func openTransferStore(ctx context.Context, cfg config, log *zap.Logger) (transferPorts, error) {
	switch cfg.store {
	case "sqlite":
		e, err := sqlite.Open(ctx, sqlite.Config{Dir: cfg.dataDir, Logger: log})
		if err != nil {
			return transferPorts{}, err
		}
		return transferPorts{e.Store, e.DataKeys, e.Claims, e.Close}, nil
	case "scylla":
		c := cfg.scylla
		c.Upcaster, c.Logger, c.Feed = nil, log, cfg.feed
		e, err := cql.Open(ctx, c)
		if err != nil {
			return transferPorts{}, err
		}
		return transferPorts{e.Store, e.DataKeys, e.Claims, e.Close}, nil
	default:
		return transferPorts{}, fmt.Errorf("store %q: want sqlite or scylla", cfg.store)
	}
}

// transferFlags are export's and import's own flags, taken out of args
// before the store's flags are parsed.
type transferFlags struct {
	file      string // -to or -from
	gzip      bool   // -gzip: compress the export whatever its name
	published bool   // -published: the relay counts the imported events as published
}

// cutTransferFlags takes the flag named file (with its value) and the
// boolean flags of transferFlags out of args.
func cutTransferFlags(args []string, file string) (transferFlags, []string, error) {
	var (
		f    transferFlags
		rest []string
		seen bool
	)
	for i := 0; i < len(args); i++ {
		name, val, hasVal := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if !strings.HasPrefix(args[i], "-") {
			rest = append(rest, args[i])
			continue
		}
		switch name {
		case file:
			if !hasVal {
				if i+1 == len(args) {
					return f, nil, usageError{fmt.Errorf("flag needs an argument: -%s", file)}
				}
				i++
				val = args[i]
			}
			f.file, seen = val, true
		case "gzip", "published":
			b := !hasVal || val == "true"
			if hasVal && val != "true" && val != "false" {
				return f, nil, usageError{fmt.Errorf("-%s=%s: want true or false", name, val)}
			}
			if name == "gzip" {
				f.gzip = b
			} else {
				f.published = b
			}
		case "h", "help":
			return f, []string{"-help"}, nil // parseConfig prints the usage
		default:
			rest = append(rest, args[i])
		}
	}
	if !seen || f.file == "" {
		return f, nil, usageError{fmt.Errorf("-%s FILE is required (- for standard %s)", file, map[string]string{"to": "output", "from": "input"}[file])}
	}
	return f, rest, nil
}

// transferReportEvery is how often a progress line is printed where stderr
// is not a terminal.
const transferReportEvery = 5 * time.Second

// runExport is `orderd export -to FILE`: it writes the whole log of the
// configured store to FILE (- for standard output; gzip-compressed when
// FILE ends in .gz or with -gzip) in the stream format of package
// transfer, with progress on stderr.
func runExport(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer, stderr *os.File) (err error) {
	tf, rest, err := cutTransferFlags(args, "to")
	if err != nil {
		return err
	}
	cfg, err := parseConfig(rest, getenv, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	defer func() { _ = log.Sync() }()
	p, err := openTransferStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, p.close()) }()

	w, closeOut := stdout, func() error { return nil }
	if tf.file != "-" {
		f, err := os.Create(tf.file)
		if err != nil {
			return err
		}
		w, closeOut = f, f.Close
	}
	if tf.gzip || strings.HasSuffix(tf.file, ".gz") {
		zw := gzip.NewWriter(w)
		prev := closeOut
		w, closeOut = zw, func() error { return errors.Join(zw.Close(), prev()) }
	}
	var n transfer.Counter
	prog := transfer.StartProgress(stderr, "exported", isTerminal(stderr), transferReportEvery, &n)
	// The data keys follow the events, wrapped by this deployment's KEK:
	// the target needs the same KEK (-kek-file, ORDERD_KEK). The e-mail
	// claims follow the keys: without them a customer's address would be
	// free to take on the target.
	_, err = transfer.Export(ctx, p.st, transfer.Rows{Keys: p.keys, Claims: p.claims}, w, time.Now(), &n)
	prog.Stop()
	return errors.Join(err, closeOut())
}

// runImport is `orderd import -from FILE`: it appends the stream in FILE
// (- for standard input; gzip is recognised by its magic number) to the
// configured store, resumably, with progress on stderr. With -published
// the relay's progress is set past every imported event, so that it
// publishes none of them; the projector always projects them.
func runImport(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stderr *os.File) (err error) {
	tf, rest, err := cutTransferFlags(args, "from")
	if err != nil {
		return err
	}
	if tf.gzip {
		return usageError{errors.New("-gzip is an export flag: import recognises gzip by itself")}
	}
	cfg, err := parseConfig(rest, getenv, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	defer func() { _ = log.Sync() }()

	r := stdin
	if tf.file != "-" {
		f, err := os.Open(tf.file)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		r = f
	}
	br := bufio.NewReaderSize(r, 1<<20)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return err
		}
		r = zr
	} else {
		r = br
	}
	p, err := openTransferStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, p.close()) }()
	opt := transfer.Options{Marker: p.st, Keys: p.keys, Claims: p.claims}
	if tf.published {
		opt.Published = []string{relay.Consumer}
	}
	var n transfer.Counter
	prog := transfer.StartProgress(stderr, "imported", isTerminal(stderr), transferReportEvery, &n)
	err = transfer.Import(ctx, p.st, r, opt, &n)
	prog.Stop()
	return err
}
