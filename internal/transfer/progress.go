package transfer

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Counter counts the events an Export or Import has handled, for a
// Progress report. A nil *Counter counts nothing.
type Counter struct {
	done, skipped, total atomic.Int64
}

func (c *Counter) add(done, skipped int64) {
	if c != nil {
		c.done.Add(done)
		c.skipped.Add(skipped)
	}
}

func (c *Counter) setTotal(n int64) {
	if c != nil {
		c.total.Store(n)
	}
}

// Done returns how many events were written (an export) or appended (an
// import), and how many an import skipped as already stored.
func (c *Counter) Done() (done, skipped int64) { return c.done.Load(), c.skipped.Load() }

// Progress reports a Counter on w every so often until Stop: on a
// terminal one line redrawn in place, elsewhere a plain line each time,
// as a log would want it.
type Progress struct {
	w        io.Writer
	verb     string
	terminal bool
	c        *Counter
	start    time.Time
	stop     chan struct{}
	wg       sync.WaitGroup
}

// StartProgress reports c on w, every second on a terminal and every
// every elsewhere, as "verb N of M events …".
func StartProgress(w io.Writer, verb string, terminal bool, every time.Duration, c *Counter) *Progress {
	p := &Progress{w: w, verb: verb, terminal: terminal, c: c, start: time.Now(), stop: make(chan struct{})}
	if terminal {
		every = time.Second
	}
	p.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.print(false)
			}
		}
	})
	return p
}

// Stop ends the reports with a last one, which stays on its line.
func (p *Progress) Stop() {
	close(p.stop)
	p.wg.Wait()
	p.print(true)
}

func (p *Progress) print(last bool) {
	done, skipped := p.c.Done()
	el := time.Since(p.start)
	rate := float64(done) / max(el.Seconds(), 1e-3)
	msg := fmt.Sprintf("%s %d events", p.verb, done)
	if total := p.c.total.Load(); total > 0 {
		msg = fmt.Sprintf("%s %d of ~%d events (%.0f%%)", p.verb, done+skipped, total, 100*float64(done+skipped)/float64(total))
	}
	if skipped > 0 {
		msg += fmt.Sprintf(", %d already stored", skipped)
	}
	msg += fmt.Sprintf(", %.0f events/s, %s", rate, el.Round(time.Second))
	switch {
	case p.terminal && last:
		fmt.Fprintf(p.w, "\r\033[K%s\n", msg)
	case p.terminal:
		fmt.Fprintf(p.w, "\r\033[K%s", msg)
	default:
		fmt.Fprintln(p.w, msg)
	}
}
