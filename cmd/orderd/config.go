package main

import (
	"flag"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// config is everything orderd reads from its flags and environment. Each
// flag has an ORDERD_ variable; a flag given on the command line wins.
type config struct {
	httpAddr        string
	dataDir         string
	store           string
	logLevel        string
	logFormat       string
	readWait        time.Duration
	shutdownTimeout time.Duration
}

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("orderd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	fs.StringVar(&c.httpAddr, "http-addr", env("ORDERD_HTTP_ADDR", ":8080"), "address the HTTP API listens on (ORDERD_HTTP_ADDR)")
	fs.StringVar(&c.dataDir, "data-dir", env("ORDERD_DATA_DIR", "./data"), "directory of the embedded store's files (ORDERD_DATA_DIR)")
	fs.StringVar(&c.store, "store", env("ORDERD_STORE", "sqlite"), "event store backend: sqlite (ORDERD_STORE)")
	fs.StringVar(&c.logLevel, "log-level", env("ORDERD_LOG_LEVEL", "info"), "debug, info, warn or error (ORDERD_LOG_LEVEL)")
	fs.StringVar(&c.logFormat, "log-format", env("ORDERD_LOG_FORMAT", "json"), "json or console (ORDERD_LOG_FORMAT)")
	readWait, err := durationEnv(getenv, "ORDERD_READ_WAIT", 2*time.Second)
	if err != nil {
		return c, err
	}
	fs.DurationVar(&c.readWait, "read-wait", readWait, "longest wait of a GET with min_version for the projection (ORDERD_READ_WAIT)")
	shutdown, err := durationEnv(getenv, "ORDERD_SHUTDOWN_TIMEOUT", 15*time.Second)
	if err != nil {
		return c, err
	}
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", shutdown, "longest wait for in-flight requests on SIGTERM (ORDERD_SHUTDOWN_TIMEOUT)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.store != "sqlite" {
		return c, fmt.Errorf("store %q is not available: this build has sqlite", c.store)
	}
	if c.logFormat != "json" && c.logFormat != "console" {
		return c, fmt.Errorf("log format %q: want json or console", c.logFormat)
	}
	if _, err := zapcore.ParseLevel(c.logLevel); err != nil {
		return c, fmt.Errorf("log level: %w", err)
	}
	return c, nil
}

func durationEnv(getenv func(string) string, name string, def time.Duration) (time.Duration, error) {
	v := getenv(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s=%q: want a positive duration such as 2s", name, v)
	}
	return d, nil
}

// newLogger builds the process's logger; it is passed down, never global.
func newLogger(c config, w io.Writer) *zap.Logger {
	level, _ := zapcore.ParseLevel(c.logLevel)
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if c.logFormat == "console" {
		encCfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), level))
}
