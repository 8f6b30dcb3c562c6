package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
)

const rebuildUsage = `usage: orderd rebuild [-detach]      rebuild the read models and follow it to the switch
       orderd rebuild follow [ID]     follow a rebuild (the latest without ID) until it ends
       orderd rebuild status [ID]     print a rebuild's state once
       orderd rebuild cancel ID       ask a rebuild to stop before its switch

Rebuilds run in a running orderd, through its admin API: new read-model
tables are built from the whole event log while queries keep reading the
current ones, which they replace atomically once caught up. One rebuild runs
at a time. On a terminal the progress is a bar; otherwise plain lines. The
command exits 0 once the new tables serve reads, 1 if the rebuild failed or
was cancelled. Flags may come before or after the command:
`

// rebuildJSON is a rebuild as the admin API answers it.
type rebuildJSON struct {
	ID              uuid.UUID `json:"id"`
	State           string    `json:"state"`
	Generation      *int64    `json:"generation"`
	Replaces        *int64    `json:"replaces"`
	EventsDone      int64     `json:"events_done"`
	EventsTotal     int64     `json:"events_total"`
	EventsPerSecond float64   `json:"events_per_second"`
	ETASeconds      *float64  `json:"eta_seconds"`
	Error           *string   `json:"error"`
	CancelRequested bool      `json:"cancel_requested"`
}

func (r rebuildJSON) ended() bool {
	return r.State == "done" || r.State == "failed" || r.State == "cancelled"
}

// Rebuild is `orderd rebuild`, a client of the admin API at -addr
// (ORDERD_ADMIN_URL) with the token -token (ORDERD_ADMIN_TOKEN). Like DLQ
// it prints every failure once, as "orderd rebuild: …", to stderr and
// returns it; following a rebuild that failed or was cancelled is such a
// failure. terminal says whether stdout is one: then progress is a bar
// redrawn in place. -help prints the usage and returns nil.
func Rebuild(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, terminal bool) (err error) {
	defer func() { report(stderr, "rebuild", err) }()
	fs, client := adminFlags("rebuild", rebuildUsage, getenv, stderr)
	detach := fs.Bool("detach", false, "start the rebuild, print its ID and exit without following it")
	every := fs.Duration("every", 250*time.Millisecond, "how often to ask for progress while following")
	words, err := fs.parse(args)
	if err != nil || words == nil {
		return err
	}
	c := client()
	p := &progressPrinter{w: stdout, terminal: terminal}

	cmd, rest := "", []string(nil)
	if len(words) > 0 {
		cmd, rest = words[0], words[1:]
	}
	path := "/v1/admin/rebuilds/latest"
	switch {
	case cmd == "" || cmd == "start":
		if len(rest) > 0 {
			return fmt.Errorf("starting a rebuild takes no argument, got %q", rest)
		}
		var r rebuildJSON
		if err := c.do(ctx, http.MethodPost, "/v1/admin/rebuilds", &r); err != nil {
			var pe *problemError
			if errors.As(err, &pe) && pe.Code == "rebuild_running" {
				return fmt.Errorf("%s; follow it with: orderd rebuild follow", pe.Detail)
			}
			return err
		}
		if *detach {
			fmt.Fprintln(stdout, r.ID)
			return nil
		}
		fmt.Fprintf(stdout, "rebuild %s requested\n", r.ID)
		return c.follow(ctx, "/v1/admin/rebuilds/"+r.ID.String(), *every, p)
	case cmd == "follow" || cmd == "status" || cmd == "cancel":
		if cmd == "cancel" && len(rest) != 1 {
			return errors.New("cancel takes one rebuild ID")
		}
		if len(rest) > 1 {
			return fmt.Errorf("%s takes at most one rebuild ID", cmd)
		}
		if len(rest) == 1 {
			id, err := uuid.Parse(rest[0])
			if err != nil {
				return fmt.Errorf("%s: %q is not a rebuild ID (a UUID)", cmd, rest[0])
			}
			path = "/v1/admin/rebuilds/" + id.String()
		}
	default:
		return &usageError{fmt.Errorf("unknown command %q", cmd)}
	}
	switch cmd {
	case "follow":
		return c.follow(ctx, path, *every, p)
	case "cancel":
		var r rebuildJSON
		if err := c.do(ctx, http.MethodPost, path+"/cancel", &r); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "rebuild %s asked to stop (it is %s); it stops before its switch\n", r.ID, r.State)
		return nil
	}
	var r rebuildJSON
	if err := c.do(ctx, http.MethodGet, path, &r); err != nil {
		return err
	}
	p.line(r)
	return nil
}

// follow asks for the rebuild at path every interval and prints its
// progress until it ends: nil when done, an error saying why otherwise.
func (c *adminClient) follow(ctx context.Context, path string, every time.Duration, p *progressPrinter) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		var r rebuildJSON
		if err := c.do(ctx, http.MethodGet, path, &r); err != nil {
			p.done()
			return err
		}
		p.show(r)
		if r.ended() {
			p.done()
			if r.State == "done" {
				return nil
			}
			return fmt.Errorf("rebuild %s %s: %s", r.ID, r.State, deref(r.Error))
		}
		select {
		case <-ctx.Done():
			p.done()
			return fmt.Errorf("stopped following rebuild %s (it goes on in orderd): %w", r.ID, ctx.Err())
		case <-t.C:
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return "no reason given"
	}
	return *s
}

// progressPrinter shows a rebuild's progress: on a terminal one line
// redrawn in place (a bar, a new line at each change of state); otherwise
// a plain line at each change of state and every plainEvery.
type progressPrinter struct {
	w        io.Writer
	terminal bool
	state    string    // of the last line
	printed  time.Time // when a plain line was printed last
	open     bool      // a terminal line is being redrawn
}

// plainEvery spaces the plain progress lines of one state.
const plainEvery = 2 * time.Second

func (p *progressPrinter) show(r rebuildJSON) {
	changed := r.State != p.state
	if p.terminal {
		if changed && p.open {
			fmt.Fprintln(p.w)
		}
		fmt.Fprintf(p.w, "\r\033[K%s", p.bar(r))
		p.open, p.state = true, r.State
		if r.ended() {
			fmt.Fprintln(p.w)
			p.open = false
			p.final(r)
		}
		return
	}
	if changed || time.Since(p.printed) >= plainEvery || r.ended() {
		p.line(r)
		p.printed, p.state = time.Now(), r.State
		if r.ended() {
			p.final(r)
		}
	}
}

// done ends a line being redrawn.
func (p *progressPrinter) done() {
	if p.open {
		fmt.Fprintln(p.w)
		p.open = false
	}
}

// line prints r as one plain line.
func (p *progressPrinter) line(r rebuildJSON) {
	fmt.Fprintf(p.w, "rebuild %s: %s, %d/%d events (%d%%), %.0f events/s%s\n",
		r.ID, r.State, r.EventsDone, r.EventsTotal, percent(r), r.EventsPerSecond, eta(r))
}

// final prints how r ended.
func (p *progressPrinter) final(r rebuildJSON) {
	switch r.State {
	case "done":
		fmt.Fprintf(p.w, "rebuild %s done: generation %d serves reads (it replaced %d)\n", r.ID, *r.Generation, *r.Replaces)
	default:
		fmt.Fprintf(p.w, "rebuild %s %s: %s\n", r.ID, r.State, deref(r.Error))
	}
}

// bar is r as a terminal line.
func (p *progressPrinter) bar(r rebuildJSON) string {
	const width = 30
	filled := percent(r) * width / 100
	return fmt.Sprintf("%-11s [%s%s] %3d%%  %d/%d events  %.0f ev/s%s",
		r.State, strings.Repeat("█", filled), strings.Repeat("░", width-filled), percent(r),
		r.EventsDone, r.EventsTotal, r.EventsPerSecond, eta(r))
}

func percent(r rebuildJSON) int {
	if r.State == "done" {
		return 100
	}
	if r.EventsTotal <= 0 {
		return 0
	}
	return int(min(100, r.EventsDone*100/r.EventsTotal))
}

func eta(r rebuildJSON) string {
	if r.ETASeconds == nil {
		return ""
	}
	return ", ETA " + (time.Duration(*r.ETASeconds * float64(time.Second))).Round(time.Second).String()
}
