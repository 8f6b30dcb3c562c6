package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/readmodel/readmodeltest"
)

// BenchmarkApply measures projection throughput into the SQLite views: each
// iteration applies one batch, in one transaction, as the projector's feed
// hands it over.
func BenchmarkApply(b *testing.B) {
	for _, size := range []int{1, 16, 64, 256} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			v := mustOpen(b, filepath.Join(b.TempDir(), "views.db"))
			events := readmodeltest.Pipeline(b, b.N*size)
			ctx := context.Background()
			b.ResetTimer()
			cpu := cpuTime(b)
			for i := 0; i < b.N; i++ {
				if err := v.Apply(ctx, events[i*size:(i+1)*size]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(cpuTime(b)-cpu)/float64(time.Microsecond)/float64(b.N*size), "cpu-µs/event")
		})
	}
}

// cpuTime returns the process's CPU time so far (user and system): per
// event, unlike the wall-clock figures, it holds when other work shares
// the machine, and it leaves out the waits for fsync.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkApplyWithWaiters is the projector's throughput (batches of 16
// events) beside 0 and 500 reads waiting with min_version for rows the
// batches do not touch, as GETs waiting for a lagging projection do. A
// waiter must cost the writer nothing unless its own row changes.
func BenchmarkApplyWithWaiters(b *testing.B) {
	const size = 16
	for _, waiters := range []int{0, 500} {
		b.Run(fmt.Sprintf("waiters=%d", waiters), func(b *testing.B) {
			v := mustOpen(b, filepath.Join(b.TempDir(), "views.db"))
			events := readmodeltest.Pipeline(b, b.N*size)
			q := readmodel.NewQueries(v, readmodeltest.AllStored{}, time.Hour, 0)
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for range waiters {
				wg.Go(func() { _, _ = q.Order(ctx, uuid.New(), 1) })
			}
			defer func() { cancel(); wg.Wait() }()
			time.Sleep(100 * time.Millisecond) // let them all wait
			b.ResetTimer()
			cpu := cpuTime(b)
			for i := 0; i < b.N; i++ {
				if err := v.Apply(ctx, events[i*size:(i+1)*size]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(cpuTime(b)-cpu)/float64(time.Microsecond)/float64(b.N*size), "cpu-µs/event")
		})
	}
}
