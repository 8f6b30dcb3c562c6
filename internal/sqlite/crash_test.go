package sqlite

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/store"
)

// crashEnv names the database a child process of TestCrash writes to.
const crashEnv = "ORDERD_SQLITE_CRASH_DB"

// TestCrash kills a process that appends as fast as it can (SIGKILL, no
// chance to clean up) and checks that every append it acknowledged is in
// the reopened database, which is consistent. It tests that replies never
// precede COMMIT and that SQLite recovers the WAL; the operating system
// still had the written pages, so it cannot test a power cut.
func TestCrash(t *testing.T) {
	if path := os.Getenv(crashEnv); path != "" {
		crashChild(path)
		return
	}
	if testing.Short() {
		t.Skip("starts a child process")
	}
	path := filepath.Join(t.TempDir(), "events.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrash$")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	// Each line is "aggregate-id sequence": that version was acknowledged.
	acked := make(map[uuid.UUID]int64)
	lines, killed := 0, false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		idText, seqText, _ := strings.Cut(sc.Text(), " ")
		id, err1 := uuid.Parse(idText)
		seq, err2 := strconv.ParseInt(seqText, 10, 64)
		if err1 != nil || err2 != nil {
			continue // test framework output
		}
		acked[id] = max(acked[id], seq)
		if lines++; lines == 500 && !killed {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	_ = cmd.Wait() // killed: the error is expected
	if !killed {
		t.Fatalf("child exited after %d acknowledgements", lines)
	}

	s := mustOpen(t, path, nil)
	var integrity string
	if err := s.r.QueryRowContext(t.Context(), "PRAGMA integrity_check").Scan(&integrity); err != nil || integrity != "ok" {
		t.Fatalf("integrity_check = %q, %v", integrity, err)
	}
	for id, seq := range acked {
		evs, err := s.Load(t.Context(), id, 0)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(evs)) < seq {
			t.Errorf("aggregate %s: %d events after the crash, but %d were acknowledged", id, len(evs), seq)
		}
	}
	head, err := s.Head(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var prev int64
	for prev < head {
		evs, err := s.ReadFeed(t.Context(), prev, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.Position <= prev {
				t.Fatalf("feed position %d after %d", e.Position, prev)
			}
			prev = e.Position
		}
	}
	t.Logf("%d acknowledgements from %d aggregates before the kill; %d events after reopening", lines, len(acked), head)
}

// crashChild appends from several goroutines until it is killed, printing
// each acknowledged version.
func crashChild(path string) {
	s, err := OpenStore(path, Options{Logger: zap.NewNop()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// A parent that died must not leave this running for ever.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			id := uuid.Must(uuid.NewV7())
			for seq := int64(0); ctx.Err() == nil; seq += 2 {
				evs := []store.Event{event(id, seq+1), event(id, seq+2)}
				if err := s.Append(ctx, id, seq, evs); err != nil {
					fmt.Fprintln(os.Stderr, err)
					return
				}
				mu.Lock()
				fmt.Fprintf(os.Stdout, "%s %d\n", id, seq+2)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	os.Exit(3)
}
