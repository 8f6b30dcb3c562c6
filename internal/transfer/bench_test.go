package transfer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/orderd/orderd/internal/cql"
	"github.com/orderd/orderd/internal/sqlite"
	"github.com/orderd/orderd/internal/store/cqltest"
	"github.com/orderd/orderd/internal/transfer"
)

// benchStream is a stream of aggs aggregates of 5 events each, payloads
// and metadata of the size orderd writes, interleaved as a SQLite export
// interleaves a busy log.
func benchStream(b *testing.B, aggs int) []byte {
	b.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	_ = enc.Encode(transfer.Header{Format: transfer.Format, Version: transfer.FormatVersion, Created: time.Now(), Events: int64(5 * aggs)})
	ids := make([]uuid.UUID, aggs)
	for i := range ids {
		ids[i] = uuid.Must(uuid.NewV7())
	}
	now := time.Now().UTC()
	for seq := int64(1); seq <= 5; seq++ {
		for i, id := range ids {
			data := fmt.Sprintf(`{"customer_id":%q,"items":[{"product_id":%q,"quantity":%d}],"tracking_number":"T-%d","carrier":"DHL Express"}`,
				uuid.NewString(), uuid.NewString(), i%9+1, i)
			_ = enc.Encode(transfer.Line{ID: uuid.Must(uuid.NewV7()), AggregateID: id, AggregateType: "order", Sequence: seq,
				Type: "OrderThing", SchemaVersion: 1, CausationID: uuid.New(), CorrelationID: uuid.New(), Timestamp: now,
				Metadata: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
				Data:     json.RawMessage(data)})
		}
	}
	_ = enc.Encode(transfer.Trailer{End: true, Events: int64(5 * aggs)})
	return buf.Bytes()
}

// BenchmarkMove measures the three steps of a move of 50,000 events: the
// import into a fresh SQLite store, the export of that store, and the
// import of the export into a fresh Cassandra keyspace. Run it once:
//
//	go test -run '^$' -bench Move -benchtime 1x ./internal/transfer
func BenchmarkMove(b *testing.B) {
	const aggs = 10_000
	stream := benchStream(b, aggs)
	events := float64(5 * aggs)
	ctx := context.Background()
	for b.Loop() {
		src, err := sqlite.OpenStore(b.TempDir()+"/events.db", sqlite.Options{})
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if err := transfer.Import(ctx, src, bytes.NewReader(stream), transfer.Options{}, nil); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(events/time.Since(t0).Seconds(), "sqlite-import-events/s")

		var out bytes.Buffer
		t0 = time.Now()
		if _, err := transfer.Export(ctx, src, transfer.Rows{}, io.Writer(&out), time.Now(), nil); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(events/time.Since(t0).Seconds(), "sqlite-export-events/s")
		b.ReportMetric(float64(out.Len())/events, "bytes/event")
		_ = src.Close()

		hosts := cqltest.Hosts(b)
		dst, err := cql.OpenStore(ctx, cql.Config{Hosts: hosts, Keyspace: cqltest.Keyspace(b, hosts), Timeout: cqltest.Timeout,
			Logger: zaptest.NewLogger(b, zaptest.Level(zap.WarnLevel))}, cql.Options{})
		if err != nil {
			b.Fatal(err)
		}
		t0 = time.Now()
		if err := transfer.Import(ctx, dst, bytes.NewReader(out.Bytes()), transfer.Options{}, nil); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(events/time.Since(t0).Seconds(), "cassandra-import-events/s")

		t0 = time.Now()
		if _, err := transfer.Export(ctx, dst, transfer.Rows{}, io.Discard, time.Now(), nil); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(events/time.Since(t0).Seconds(), "cassandra-export-events/s")
		_ = dst.Close()
	}
}
