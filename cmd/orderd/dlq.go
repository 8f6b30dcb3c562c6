package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

const dlqUsage = `usage: orderd dlq list [-after ID] [-limit N]
       orderd dlq show ID
       orderd dlq replay ID
       orderd dlq discard ID

Operates the relay's dead letters through the admin API of a running orderd
(the ledger file belongs to that server). Flags may come before or after the
command and its ID:
`

// problemError is an admin API answer that is not a success.
type problemError struct {
	Status int
	Code   string
	Detail string
}

func (p *problemError) Error() string { return fmt.Sprintf("%d %s: %s", p.Status, p.Code, p.Detail) }

// runDLQ is `orderd dlq`, a client of the admin HTTP API. It writes results
// to stdout and every failure, as "orderd dlq: …", to stderr, then returns
// it: the caller only has to exit non-zero, without printing it again.
// -help prints the usage and returns nil.
func runDLQ(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) (err error) {
	defer func() {
		if err != nil {
			fmt.Fprintln(stderr, "orderd dlq:", err)
		}
	}()
	fs, client := adminFlags("orderd dlq", dlqUsage, getenv, stderr)
	after := fs.Int64("after", 0, "list: only dead letters with an id above this `ID`")
	limit := fs.Int("limit", 100, "list: at most `N` dead letters, 1 to 500")
	words, err := parseWords(fs, args)
	if err != nil || words == nil {
		return err
	}
	c := client()

	if len(words) == 0 {
		fs.Usage()
		return errors.New("a command is required: list, show, replay or discard")
	}
	cmd, ids := words[0], words[1:]
	if cmd == "list" {
		if len(ids) > 0 {
			return fmt.Errorf("list takes no ID, got %q", ids)
		}
		return c.list(ctx, stdout, *after, *limit)
	}
	if cmd != "show" && cmd != "replay" && cmd != "discard" {
		fs.Usage()
		return fmt.Errorf("unknown command %q", cmd)
	}
	if len(ids) != 1 {
		return fmt.Errorf("%s takes one dead letter ID", cmd)
	}
	id, err := strconv.ParseInt(ids[0], 10, 64)
	if err != nil || id < 1 {
		return fmt.Errorf("%s: the ID must be a dead letter id (a whole number of 1 or more), not %q", cmd, ids[0])
	}
	switch cmd {
	case "show":
		return c.show(ctx, stdout, id)
	case "replay":
		var res struct{ Published int }
		if err := c.do(ctx, http.MethodPost, fmt.Sprintf("/v1/admin/dlq/%d/replay", id), &res); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "dead letter %d replayed: %d event(s) published\n", id, res.Published)
	case "discard":
		var res struct{ Published int }
		if err := c.do(ctx, http.MethodDelete, fmt.Sprintf("/v1/admin/dlq/%d", id), &res); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "dead letter %d discarded: %d parked event(s) published\n", id, res.Published)
	}
	return nil
}

// deadLetter is the admin API's dead letter, as the table shows it.
type deadLetter struct {
	ID           int64      `json:"id"`
	AggregateID  string     `json:"aggregate_id"`
	Sequence     int64      `json:"sequence"`
	EventType    string     `json:"event_type"`
	Topic        string     `json:"topic"`
	State        string     `json:"state"`
	Error        *string    `json:"error"`
	Attempts     int        `json:"attempts"`
	LastFailedAt *time.Time `json:"last_failed_at"`
}

func (c *adminClient) list(ctx context.Context, stdout io.Writer, after int64, limit int) error {
	var page struct {
		DeadLetters []deadLetter `json:"dead_letters"`
		NextAfter   *int64       `json:"next_after"`
	}
	if err := c.do(ctx, http.MethodGet, fmt.Sprintf("/v1/admin/dlq?after=%d&limit=%d", after, limit), &page); err != nil {
		return err
	}
	if len(page.DeadLetters) == 0 {
		fmt.Fprintln(stdout, "no dead letters")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tAGGREGATE\tSEQ\tEVENT\tTOPIC\tATTEMPTS\tLAST FAILED\tERROR")
	for _, l := range page.DeadLetters {
		last, msg := "-", "-"
		if l.LastFailedAt != nil {
			last = l.LastFailedAt.UTC().Format(time.DateTime)
		}
		if l.Error != nil {
			msg = shorten(*l.Error, 60)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%d\t%s\t%s\n",
			l.ID, l.State, l.AggregateID, l.Sequence, l.EventType, l.Topic, l.Attempts, last, msg)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.NextAfter != nil {
		fmt.Fprintf(stdout, "more: orderd dlq list -after %d\n", *page.NextAfter)
	}
	return nil
}

// shorten keeps a table row on one line: broker errors can be long, and
// `show` prints them whole.
func shorten(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func (c *adminClient) show(ctx context.Context, stdout io.Writer, id int64) error {
	var raw json.RawMessage
	if err := c.do(ctx, http.MethodGet, fmt.Sprintf("/v1/admin/dlq/%d", id), &raw); err != nil {
		return err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err := stdout.Write(out.Bytes())
	return err
}

// clientFlags returns the flag set of a client subcommand, name, that
// prints only its usage (usage, then the flags) to stderr, on -help or a
// bad flag: the command prints its errors itself, once.
func clientFlags(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fs.SetOutput(stderr)
		defer fs.SetOutput(io.Discard)
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	return fs
}

// adminFlags returns the flag set of an admin command, name, with -addr
// and -token (see clientFlags), and the client they make once parsed.
func adminFlags(name, usage string, getenv func(string) string, stderr io.Writer) (*flag.FlagSet, func() *adminClient) {
	fs := clientFlags(name, usage, stderr)
	addr := fs.String("addr", cmp.Or(getenv("ORDERD_ADMIN_URL"), "http://127.0.0.1:8080"), "orderd's base `URL` (ORDERD_ADMIN_URL)")
	token := fs.String("token", getenv("ORDERD_ADMIN_TOKEN"), "the admin `token` (ORDERD_ADMIN_TOKEN, which other users cannot read in ps)")
	return fs, func() *adminClient {
		return &adminClient{base: strings.TrimRight(*addr, "/"), token: *token, http: &http.Client{Timeout: time.Minute}}
	}
}

// parseWords parses args with fs, flags anywhere: flag stops at the first
// argument that is not a flag, so it parses again after each one
// ("replay 42 -token T" works as well). It returns the other arguments,
// in order, and nil words and no error after -help (the usage printed).
func parseWords(fs *flag.FlagSet, args []string) ([]string, error) {
	words := []string{}
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, nil
			}
			return nil, err
		}
		if fs.NArg() == 0 {
			return words, nil
		}
		words, rest = append(words, fs.Arg(0)), fs.Args()[1:]
	}
}

// adminClient calls the admin API of one orderd.
type adminClient struct {
	base, token string
	http        *http.Client
}

// do sends a request and decodes a 2xx answer into out; any other answer
// becomes a *problemError.
func (c *adminClient) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach orderd at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("%s %s: the answer is not the expected JSON: %w", method, path, err)
		}
		return nil
	}
	p := &problemError{Status: resp.StatusCode}
	if json.Unmarshal(body, p) != nil || p.Code == "" {
		p.Code, p.Detail = "unexpected_answer", shorten(string(body), 200)
	}
	// The two answers an operator meets first are about setup, not about
	// dead letters: say what to fix.
	switch {
	case p.Status == http.StatusUnauthorized && c.token == "":
		p.Detail += " (no token given: set ORDERD_ADMIN_TOKEN or pass -token)"
	case p.Status == http.StatusNotFound && p.Code == "not_found":
		p.Detail += " (is orderd at " + c.base + " running with an admin token?)"
	}
	return p
}
