package transfer_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/transfer"
)

// claimSome writes rows under keys addresses' keys into c: 1 to 3 rows a
// key (racing claimants leave several), and drops one row of every key
// that has 3, which an export must then leave out.
func claimSome(t *testing.T, c store.EmailClaims, keys int) {
	t.Helper()
	ctx := context.Background()
	t0 := time.Now().UTC()
	for i := range keys {
		key := uuid.New()
		var rows []store.ClaimRow
		for j := range 1 + i%3 {
			r := store.ClaimRow{Attempt: uuid.New(), Customer: uuid.New(), Since: int64(i%4 + j), At: t0.Add(time.Duration(i*7+j) * time.Millisecond)}
			if _, err := c.Claim(ctx, key, r); err != nil {
				t.Fatal(err)
			}
			rows = append(rows, r)
		}
		if len(rows) == 3 {
			if err := c.Drop(ctx, key, rows[1]); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// claimRow is a row with its key, as a map key: the row of an attempt.
type claimRow struct{ key, attempt uuid.UUID }

// claimRows reads every row of c, failing on a row met twice.
func claimRows(t *testing.T, c transfer.ClaimSource) map[claimRow]store.ClaimRow {
	t.Helper()
	rows := map[claimRow]store.ClaimRow{}
	if err := c.Scan(context.Background(), func(key uuid.UUID, r store.ClaimRow) error {
		k := claimRow{key, r.Attempt}
		if _, ok := rows[k]; ok {
			return fmt.Errorf("row %s of %s twice", r.Attempt, key)
		}
		rows[k] = r
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return rows
}

// sameClaims fails unless got holds exactly want's rows, field for field.
func sameClaims(t *testing.T, want, got map[claimRow]store.ClaimRow) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d claim rows, want %d", len(got), len(want))
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("row %s of %s missing", k.attempt, k.key)
			continue
		}
		if g.Customer != w.Customer || g.Since != w.Since || !g.At.Equal(w.At) {
			t.Errorf("row %s of %s is %+v, want %+v", k.attempt, k.key, g, w)
		}
	}
}

// exportClaims exports src's events with every row of keys and claims.
func exportClaims(t *testing.T, src store.Log, rows transfer.Rows) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := transfer.Export(context.Background(), src, rows, &buf, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestClaimsTravel: an export carries the source's e-mail claim rows after
// its data keys, a dropped row left out; an import cut short among them
// and run again, twice, leaves the target with exactly the source's rows.
func TestClaimsTravel(t *testing.T) {
	ctx := context.Background()
	src, srcKeys := openSQLite(t), openDataKeys(t)
	populate(t, src, 10)
	for range 5 {
		if _, err := srcKeys.Create(ctx, store.WrappedKey{Subject: uuid.New(), KEK: "kek-1", Wrapped: []byte("w"), Created: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	claimSome(t, src.EmailClaims(), 60) // 120 rows written, 20 dropped
	want := claimRows(t, src.EmailClaims())
	if len(want) != 100 {
		t.Fatalf("the source holds %d claim rows, want 100", len(want))
	}
	stream := exportClaims(t, src, transfer.Rows{Keys: srcKeys, Claims: src.EmailClaims()})

	lines := bytes.Split(bytes.TrimSuffix(stream, []byte("\n")), []byte("\n"))
	var kinds []string // the kind of each line after the header, runs merged
	for _, l := range lines[1:] {
		k := string(l[:bytes.IndexByte(l, ':')])
		if len(kinds) == 0 || kinds[len(kinds)-1] != k {
			kinds = append(kinds, k)
		}
	}
	if got := strings.Join(kinds, " "); got != `{"id" {"key" {"claim" {"end"` {
		t.Fatalf("the stream's lines run %s, want events, keys, claims, trailer", got)
	}
	if trailer := lines[len(lines)-1]; !bytes.HasSuffix(trailer, []byte(`"keys":5,"claims":100}`)) {
		t.Fatalf("the trailer does not count 5 keys and 100 claims: %s", trailer)
	}

	dst, dstKeys := openSQLite(t), openDataKeys(t)
	opt := transfer.Options{Keys: dstKeys, Claims: dst.EmailClaims(), Chunk: 16}
	cut := stream[:len(stream)-len(lines[len(lines)-1])-40*len(lines[len(lines)-2])] // among the claim lines
	if err := transfer.Import(ctx, dst, bytes.NewReader(cut), opt, nil); err == nil {
		t.Fatal("a cut stream imported without an error")
	}
	if n := len(claimRows(t, dst.EmailClaims())); n == 0 || n >= 100 {
		t.Fatalf("the cut stream left %d claim rows, want some of 100", n)
	}
	for range 2 { // a re-run changes nothing
		if err := transfer.Import(ctx, dst, bytes.NewReader(stream), opt, nil); err != nil {
			t.Fatal(err)
		}
		sameClaims(t, want, claimRows(t, dst.EmailClaims()))
	}
}

// TestClaimsRefused: a stream with claim lines into a target without a
// claim store, a trailer that miscounts them and a bad claim line are
// refused; a version 2 stream, which has none, imports.
func TestClaimsRefused(t *testing.T) {
	ctx := context.Background()
	src, srcKeys := openSQLite(t), openDataKeys(t)
	populate(t, src, 10)
	claimSome(t, src.EmailClaims(), 10)
	stream := exportClaims(t, src, transfer.Rows{Claims: src.EmailClaims()})
	n := len(claimRows(t, src.EmailClaims()))
	counted := fmt.Appendf(nil, `"claims":%d}`, n)
	if !bytes.Contains(stream, counted) {
		t.Fatalf("the trailer does not count %d claims", n)
	}
	badLine := bytes.Replace(stream, []byte(`{"claim":{"key":"`), []byte(`{"claim":{"key":"x`), 1)
	for _, c := range []struct {
		name   string
		stream []byte
		opt    transfer.Options
		want   string
	}{
		{"no claim store", stream, transfer.Options{}, "the target has no claim store"},
		{"miscounted", bytes.Replace(stream, counted, fmt.Appendf(nil, `"claims":%d}`, n+1), 1),
			transfer.Options{Claims: openSQLite(t).EmailClaims()}, fmt.Sprintf("the trailer counts %d e-mail claims, the stream held %d", n+1, n)},
		{"uncounted", bytes.Replace(stream, []byte(`,`+string(counted)), []byte(`}`), 1),
			transfer.Options{Claims: openSQLite(t).EmailClaims()}, fmt.Sprintf("the trailer counts 0 e-mail claims, the stream held %d", n)},
		{"bad line", badLine, transfer.Options{Claims: openSQLite(t).EmailClaims()}, "a bad claim line"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := transfer.Import(ctx, openSQLite(t), bytes.NewReader(c.stream), c.opt, nil); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("import: %v, want %q", err, c.want)
			}
		})
	}

	// A version 2 stream is a version 3 one without claim lines.
	v2 := bytes.Replace(exportClaims(t, src, transfer.Rows{Keys: srcKeys}), []byte(`"version":3`), []byte(`"version":2`), 1)
	if bytes.Contains(v2, []byte(`"claim`)) {
		t.Fatalf("an export without claims mentions them")
	}
	for _, opt := range []transfer.Options{{Keys: openDataKeys(t)}, {Keys: openDataKeys(t), Claims: openSQLite(t).EmailClaims()}} {
		dst := openSQLite(t)
		if err := transfer.Import(ctx, dst, bytes.NewReader(v2), opt, nil); err != nil {
			t.Fatalf("a version 2 stream, claims taken %t: %v", opt.Claims != nil, err)
		}
		if got, _ := dst.Count(ctx); got == 0 {
			t.Fatal("the version 2 stream imported no events")
		}
	}
}
