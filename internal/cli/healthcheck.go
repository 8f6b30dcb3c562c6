package cli

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

const healthcheckUsage = `usage: orderd healthcheck [-http-addr address]

Asks the orderd listening on -http-addr on this host for /healthz and exits
0 when it answers 200 within 3 s, 1 otherwise: the container image has no
shell or curl, so its HEALTHCHECK runs the binary itself. Flags:
`

// Healthcheck is `orderd healthcheck`: it asks the orderd listening on
// -http-addr (ORDERD_HTTP_ADDR, as the server reads it) on this host for
// /healthz and fails unless it answers 200. It prints a failure once, as
// "orderd healthcheck: …", to stderr and returns it; -help prints the
// usage and returns nil.
func Healthcheck(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) (err error) {
	defer func() { report(stderr, "healthcheck", err) }()
	fs := newCommand("healthcheck", healthcheckUsage, stderr)
	addr := fs.String("http-addr", cmp.Or(getenv("ORDERD_HTTP_ADDR"), ":8080"), "the `address` the orderd to check listens on, as its -http-addr; a wildcard host is asked on 127.0.0.1 (ORDERD_HTTP_ADDR)")
	words, err := fs.parse(args)
	if err != nil || words == nil {
		return err
	}
	if len(words) > 0 {
		return fmt.Errorf("healthcheck takes no argument, got %q", words)
	}
	host, port, err := net.SplitHostPort(*addr)
	if err != nil {
		return fmt.Errorf("http addr %q: %w", *addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthz: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz: %s", resp.Status)
	}
	return nil
}
