package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
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

// DLQ is `orderd dlq`, a client of the admin HTTP API at -addr
// (ORDERD_ADMIN_URL) with the token -token (ORDERD_ADMIN_TOKEN). It writes
// results to stdout and every failure, as "orderd dlq: …", to stderr, then
// returns it: the caller only has to exit non-zero, without printing it
// again. -help prints the usage and returns nil.
func DLQ(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) (err error) {
	defer func() { report(stderr, "dlq", err) }()
	fs, client := adminFlags("dlq", dlqUsage, getenv, stderr)
	after := fs.Int64("after", 0, "list: only dead letters with an id above this `ID`")
	limit := fs.Int("limit", 100, "list: at most `N` dead letters, 1 to 500")
	words, err := fs.parse(args)
	if err != nil || words == nil {
		return err
	}
	c := client()

	if len(words) == 0 {
		fs.printUsage()
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
		return &usageError{fmt.Errorf("unknown command %q", cmd)}
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
