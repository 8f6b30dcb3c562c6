package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/orderd/orderd/internal/readmodel/readmodeltest"
)

// BenchmarkApply measures projection throughput into the SQLite views: each
// iteration applies one batch, in one transaction, as the projector's feed
// hands it over.
func BenchmarkApply(b *testing.B) {
	for _, size := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			v := mustOpen(b, filepath.Join(b.TempDir(), "views.db"))
			events := readmodeltest.Pipeline(b, b.N*size)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := v.Apply(ctx, events[i*size:(i+1)*size]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
