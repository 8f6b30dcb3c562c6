package cli

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
)

// TestBenchCannotRun: an orderd that cannot be reached, or a bad flag, is
// an error (exit 1) told in one line on stderr (followed by a one-line hint
// to -help, for a flag the command does not know, as the other subcommands
// do), and nothing on stdout.
func TestBenchCannotRun(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unreachable", []string{"-addr", dead, "-duration", "1s"}, "orderd bench: cannot reach orderd at " + dead},
		{"unreachable from ORDERD_URL", []string{"-count", "10"}, "orderd bench: cannot reach orderd at " + dead},
		{"bad mix", []string{"-mix", "reads"}, `orderd bench: -mix "reads": want create or lifecycle`},
		{"count under one order", []string{"-mix", "lifecycle", "-count", "5"}, "orderd bench: -count 5: an order of the lifecycle mix takes 10 operations"},
		{"unknown flag", []string{"-conns", "8"}, "orderd bench: flag provided but not defined: -conns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			getenv := func(k string) string {
				if k == "ORDERD_URL" {
					return dead
				}
				return ""
			}
			if err := Bench(context.Background(), tc.args, getenv, &stdout, &stderr, false); err == nil {
				t.Fatal("no error")
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			last := lines[len(lines)-1]
			if tc.name == "unknown flag" {
				const hint = "run 'orderd bench -help' for usage"
				if len(lines) != 2 || last != hint {
					t.Errorf("stderr %q, want the error line and then %q alone", stderr.String(), hint)
				}
				last = lines[0]
			}
			if !strings.HasPrefix(last, tc.want) || strings.Count(stderr.String(), "orderd bench:") != 1 {
				t.Errorf("stderr %q, want one error line starting %q", stderr.String(), tc.want)
			}
			if len(lines) > 1 && tc.name != "unknown flag" {
				t.Errorf("stderr %q, want only the error line", stderr.String())
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
		})
	}
}
