package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/store"
)

// The history of TestHistoryMemory: an order updated until it has
// historyEvents events, each replacing its items with a list of
// historyItems (the most an order takes), about 7.4 KB stored a piece: the
// shape of the order with a 58.5 MB history after 7,900 updates.
// historyReaders clients then read it whole at once, and the server's
// resident memory must stay under rssCeiling.
const (
	historyEvents  = 8000
	historyItems   = 100
	historyReaders = 40
	rssCeiling     = 300 << 20
)

// TestHistoryMemory: 40 concurrent reads of an 8,000-event history, page
// by page as Link leads, keep the server's resident memory under 300 MB.
// It builds and runs the binary with its defaults (GOGC=400, the memory
// limit of its cgroup, if any), samples VmRSS from /proc while the readers
// run and reads VmHWM, the peak, after resetting it once the history is
// written. ORDERD_TEST_MEMORY_BEFORE=<path of another orderd binary> measures
// that binary in the same way too, and reports its peak without judging it
// (an orderd from before paging answers the whole history to each GET).
func TestHistoryMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary, and writes an 8,000-event history")
	}
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	peak, hist, errs := historyMemory(t, bin)
	for _, err := range errs {
		t.Error(err)
	}
	t.Logf("this orderd: peak RSS %.1f MiB while %d clients read the %.1f MB history of %d events (%d GETs each)",
		mib(peak), historyReaders, float64(hist.bytes)/1e6, historyEvents, hist.pages)
	if peak >= rssCeiling {
		t.Errorf("peak RSS %.1f MiB, want under %d MiB", mib(peak), rssCeiling>>20)
	}
	if before := os.Getenv("ORDERD_TEST_MEMORY_BEFORE"); before != "" {
		peak, hist, errs := historyMemory(t, before)
		t.Logf("%s: peak RSS %.1f MiB in the same reads (%d GETs each); %d of %d readers failed %v",
			before, mib(peak), hist.pages, len(errs), historyReaders, errs[:min(len(errs), 1)])
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// historyRead is what one reader got: its GETs and the body bytes.
type historyRead struct {
	pages int
	bytes int64
}

// historyMemory runs bin, writes the history, resets the peak RSS, lets
// the readers read the history concurrently, and returns the peak, what
// the first reader read and the readers' errors.
func historyMemory(t *testing.T, bin string) (int64, historyRead, []error) {
	dir := t.TempDir()
	p := startBinary(t, bin, dir, nil)
	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: historyReaders}}
	call := func(method, path string, body any, want int) (map[string]any, int) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, p.base+path, bytes.NewReader(b))
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		if want != 0 && resp.StatusCode != want {
			t.Fatalf("%s %s: %d %v", method, path, resp.StatusCode, out)
		}
		return out, resp.StatusCode
	}
	items := func(i int) []aggregate.Item {
		list := make([]aggregate.Item, historyItems)
		for j := range list {
			list[j] = aggregate.Item{ProductID: uuid.New(), Quantity: i%50 + j + 1}
		}
		return list
	}
	cust, _ := call("POST", "/v1/customers", map[string]any{"email": "memory@example.com", "first_name": "M", "last_name": "R"}, 201)
	created, _ := call("POST", "/v1/orders", map[string]any{"customer_id": cust["id"], "items": items(0)}, 201)
	id := uuid.MustParse(created["id"].(string))

	// The updates are appended to the store directly, orderd stopped, in
	// batches: 8,000 commands one at a time would wait for 8,000 commits.
	// They are the events UpdateItems appends, with the same envelope.
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	st, err := sqlite.OpenStore(filepath.Join(dir, "events.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for v := int64(1); v < historyEvents; {
		batch := make([]store.Event, min(500, historyEvents-v))
		for i := range batch {
			at := time.Now().UTC()
			data, err := json.Marshal(aggregate.OrderItemsUpdated{Items: items(int(v) + i), UpdatedAt: at})
			if err != nil {
				t.Fatal(err)
			}
			batch[i] = store.Event{ID: uuid.Must(uuid.NewV7()), AggregateID: id, AggregateType: aggregate.OrderType,
				Sequence: v + int64(i) + 1, Type: "OrderItemsUpdated", SchemaVersion: aggregate.SchemaVersion("OrderItemsUpdated"),
				Data: data, CausationID: uuid.New(), CorrelationID: uuid.New(), Timestamp: at,
				Metadata: map[string]string{"command": "UpdateItems"}}
		}
		if err := st.Append(t.Context(), id, v, batch); err != nil {
			t.Fatal(err)
		}
		v += int64(len(batch))
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	p = startBinary(t, bin, dir, nil)
	// The projector catches up with the appends before the readers start.
	deadline := time.Now().Add(time.Minute)
	for {
		_, status := call("GET", fmt.Sprintf("/v1/orders/%s?min_version=%d", id, historyEvents), nil, 0)
		if status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the projection did not reach version %d within a minute (last status %d)", historyEvents, status)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("wrote %d events in %v; RSS %.1f MiB", historyEvents, time.Since(start).Round(time.Millisecond), mib(procStatus(t, p, "VmRSS")))

	// The peak from here on: "5" to clear_refs resets VmHWM (Linux 4.0).
	pid := p.cmd.Process.Pid
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		t.Logf("could not reset the peak RSS (%v): VmHWM includes the writes", err)
	}
	var (
		sampled atomic.Int64
		wg      sync.WaitGroup
	)
	stop := make(chan struct{})
	sampler := make(chan struct{})
	go func() {
		defer close(sampler)
		for {
			if rss := procStatus(t, p, "VmRSS"); rss > sampled.Load() {
				sampled.Store(rss)
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	start = time.Now()
	reads := make([]historyRead, historyReaders)
	errs := make(chan error, historyReaders)
	for i := range reads {
		wg.Go(func() {
			r, err := readHistory(client, p.base, id.String())
			reads[i] = r
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(stop)
	<-sampler
	close(errs)
	var failed []error
	for err := range errs {
		failed = append(failed, err)
	}
	peak := max(sampled.Load(), procStatus(t, p, "VmHWM"))
	t.Logf("%d readers done in %v; RSS now %.1f MiB", historyReaders, time.Since(start).Round(time.Millisecond), mib(procStatus(t, p, "VmRSS")))
	return peak, reads[0], failed
}

// readHistory reads order id's whole history, following Link from page to
// page, and checks that the pages hold historyEvents events and that each
// Link starts after the page before. It counts the events of a page rather
// than decoding them: 40 clients decoding 2.3 GB of JSON would take the
// CPU from the server being measured (TestHistoryPages checks the pages'
// contents).
func readHistory(client *http.Client, base, id string) (historyRead, error) {
	var (
		r    historyRead
		body bytes.Buffer
		seen int
	)
	next := "/v1/orders/" + id + "/events"
	for next != "" {
		resp, err := client.Get(base + next)
		if err != nil {
			return r, err
		}
		body.Reset()
		_, err = body.ReadFrom(resp.Body)
		resp.Body.Close()
		r.pages++
		r.bytes += int64(body.Len())
		if err != nil || resp.StatusCode != http.StatusOK {
			return r, fmt.Errorf("GET %s: %d %v", next, resp.StatusCode, err)
		}
		seen += bytes.Count(body.Bytes(), []byte(`"event_id":`))
		next = ""
		if m := nextLinkRE.FindStringSubmatch(resp.Header.Get("Link")); m != nil {
			next = m[1]
			if want := fmt.Sprintf("after_version=%d&", seen); !strings.Contains(next, want) {
				return r, fmt.Errorf("Link %s after %d events, want %s", next, seen, want)
			}
		}
	}
	if seen != historyEvents {
		return r, fmt.Errorf("read %d events, want %d", seen, historyEvents)
	}
	return r, nil
}

// procStatus reads a size field of /proc/<pid>/status ("VmRSS", "VmHWM"),
// in bytes.
func procStatus(t testing.TB, p *process, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Errorf("read the RSS: %v", err)
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			t.Errorf("%s: %q: %v", field, value, err)
		}
		return kb << 10
	}
	t.Errorf("no %s in /proc/%d/status", field, p.cmd.Process.Pid)
	return 0
}
