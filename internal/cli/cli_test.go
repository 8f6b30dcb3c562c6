package cli

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// subcommands runs each client subcommand as main does, with no environment.
var subcommands = map[string]func(args []string, stdout, stderr io.Writer) error{
	"dlq": func(args []string, stdout, stderr io.Writer) error {
		return DLQ(context.Background(), args, func(string) string { return "" }, stdout, stderr)
	},
	"rebuild": func(args []string, stdout, stderr io.Writer) error {
		return Rebuild(context.Background(), args, func(string) string { return "" }, stdout, stderr, false)
	},
	"bench": func(args []string, stdout, stderr io.Writer) error {
		return Bench(context.Background(), args, func(string) string { return "" }, stdout, stderr, false)
	},
	"healthcheck": func(args []string, _, stderr io.Writer) error {
		return Healthcheck(context.Background(), args, func(string) string { return "" }, stderr)
	},
}

// TestHelp: each subcommand's -help (and -h) describes that subcommand, its
// usage line and only its own flags, on stderr, and is no failure.
func TestHelp(t *testing.T) {
	own := map[string][]string{
		"dlq":         {"usage: orderd dlq list", "orderd dlq replay ID", "-addr", "-token", "-after", "-limit"},
		"rebuild":     {"usage: orderd rebuild", "orderd rebuild follow", "orderd rebuild cancel ID", "-addr", "-token", "-detach", "-every"},
		"bench":       {"usage: orderd bench", "-mix lifecycle", "-addr", "-connections", "-duration", "-count", "-rate", "-warmup", "-json"},
		"healthcheck": {"usage: orderd healthcheck", "/healthz", "-http-addr"},
	}
	// Flags of the server or of another subcommand.
	others := map[string][]string{
		"dlq":         {"-store", "-data-dir", "-kafka-brokers", "-http-addr", "-detach", "-mix"},
		"rebuild":     {"-store", "-data-dir", "-kafka-brokers", "-http-addr", "-limit", "-mix"},
		"bench":       {"-store", "-data-dir", "-kafka-brokers", "-http-addr", "-token", "-limit"},
		"healthcheck": {"-store", "-data-dir", "-kafka-brokers", "-token", "-mix", "  -addr"},
	}
	for name, run := range subcommands {
		for _, arg := range []string{"-help", "-h"} {
			var stdout, stderr bytes.Buffer
			if err := run([]string{arg}, &stdout, &stderr); err != nil {
				t.Errorf("orderd %s %s: %v", name, arg, err)
			}
			if stdout.Len() != 0 {
				t.Errorf("orderd %s %s printed on stdout: %q", name, arg, &stdout)
			}
			for _, want := range own[name] {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("orderd %s %s does not mention %q:\n%s", name, arg, want, &stderr)
				}
			}
			for _, not := range others[name] {
				if strings.Contains(stderr.String(), not) {
					t.Errorf("orderd %s %s mentions %q, not its own:\n%s", name, arg, not, &stderr)
				}
			}
		}
	}
}

// TestMistypedFlag: a flag a subcommand does not know, or a value it
// cannot parse, fails with the error and a one-line hint, not the usage.
func TestMistypedFlag(t *testing.T) {
	for name, run := range subcommands {
		for _, args := range [][]string{{"-no-such-flag"}, {"-help-me"}} {
			var stdout, stderr bytes.Buffer
			if err := run(args, &stdout, &stderr); err == nil {
				t.Errorf("orderd %s %s: no error", name, args[0])
			}
			want := "orderd " + name + ": flag provided but not defined: " + args[0] + "\n" +
				"run 'orderd " + name + " -help' for usage\n"
			if stderr.String() != want || stdout.Len() != 0 {
				t.Errorf("orderd %s %s: stdout %q, stderr %q; want stderr %q", name, args[0], &stdout, &stderr, want)
			}
		}
	}
	var stderr bytes.Buffer
	if err := subcommands["bench"]([]string{"-connections", "x"}, io.Discard, &stderr); err == nil ||
		!strings.HasPrefix(stderr.String(), `orderd bench: invalid value "x" for flag -connections`) ||
		!strings.HasSuffix(stderr.String(), "\nrun 'orderd bench -help' for usage\n") || strings.Count(stderr.String(), "\n") != 2 {
		t.Errorf("orderd bench -connections x: %v, stderr %q", err, &stderr)
	}
	stderr.Reset()
	if err := subcommands["rebuild"]([]string{"restart"}, io.Discard, &stderr); err == nil ||
		stderr.String() != "orderd rebuild: unknown command \"restart\"\nrun 'orderd rebuild -help' for usage\n" {
		t.Errorf("orderd rebuild restart: %v, stderr %q", err, &stderr)
	}
}

// TestHealthcheckAnswers: healthcheck passes on a 200 from /healthz, on
// the address from -http-addr or ORDERD_HTTP_ADDR (a flag wins), and
// fails, saying why, on any other answer.
func TestHealthcheckAnswers(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	env := func(k string) string { return map[string]string{"ORDERD_HTTP_ADDR": addr}[k] }
	if err := Healthcheck(t.Context(), nil, env, io.Discard); err != nil {
		t.Errorf("ORDERD_HTTP_ADDR=%s: %v", addr, err)
	}
	if err := Healthcheck(t.Context(), []string{"-http-addr", addr}, func(string) string { return "127.0.0.1:1" }, io.Discard); err != nil {
		t.Errorf("-http-addr %s over ORDERD_HTTP_ADDR: %v", addr, err)
	}
	status = http.StatusServiceUnavailable
	var stderr bytes.Buffer
	if err := Healthcheck(t.Context(), nil, env, &stderr); err == nil || stderr.String() != "orderd healthcheck: healthz: 503 Service Unavailable\n" {
		t.Errorf("a 503: %v, stderr %q", err, &stderr)
	}
	stderr.Reset()
	if err := Healthcheck(t.Context(), []string{"now"}, env, &stderr); err == nil || !strings.HasPrefix(stderr.String(), "orderd healthcheck: healthcheck takes no argument") {
		t.Errorf("an argument: %v, stderr %q", err, &stderr)
	}
}
