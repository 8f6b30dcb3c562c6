package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd"
	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/api"
	"github.com/orderd/orderd/internal/cql"
	"github.com/orderd/orderd/internal/pii"
	"github.com/orderd/orderd/internal/store/cqltest"
)

// roundsWant are the Paxos rounds each command costs on CQL: lightweight
// transactions and SERIAL reads, unkeyed and with an Idempotency-Key (the
// key's first use; a replay runs no command). docs/performance.md lists
// them and why each stays; a change that adds a round fails
// TestPaxosRounds.
var roundsWant = map[string][2]rounds{
	//                     unkeyed                keyed
	"register customer": {{}, {lwt: 3}},
	"change e-mail":     {{lwt: 1}, {lwt: 2}},
	"change phone":      {{lwt: 1}, {lwt: 2}},
	"create order":      {{}, {lwt: 2}},
	"update items":      {{lwt: 1}, {lwt: 2}},
	"confirm":           {{lwt: 1}, {lwt: 2}},
	"ship":              {{lwt: 1}, {lwt: 2}},
	"deliver":           {{lwt: 1}, {lwt: 2}},
	"cancel":            {{lwt: 1}, {lwt: 2}},
	"erasure":           {{lwt: 1}, {lwt: 2}},
	// The first command after a create, sent to an instance that did not
	// run the create: it reads the aggregate, and learns whether Mint
	// left it (see internal/cql/mint.go).
	"confirm on another instance": {{lwt: 1}, {lwt: 2}},
	// A retry of a keyed create that was answered: its Begin, which finds
	// the record (the answer is read from the events, plainly).
	"replay of create order": {{}, {lwt: 1}},
}

// rounds is what one command cost.
type rounds struct{ lwt, serial int }

func (r rounds) String() string { return fmt.Sprintf("%d LWT + %d SERIAL", r.lwt, r.serial) }

// TestPaxosRounds runs every command type through the HTTP API, wired as
// run wires it, on a real Cassandra keyspace, once without and once with
// an Idempotency-Key, and counts what each sends to the cluster with a
// driver observer: every conditional statement or batch (a lightweight
// transaction) and every SERIAL read. The counts are held in roundsWant.
func TestPaxosRounds(t *testing.T) {
	hosts := cqltest.Hosts(t)
	ks := cqltest.Keyspace(t, hosts)
	counter := cql.NewRounds()
	kek, err := pii.NewLocalKEK(bytes.Repeat([]byte{7}, pii.KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	const token = "rounds-s3cret"
	// instance serves the API as run wires it, on a store of its own.
	instance := func(name string) *httptest.Server {
		st, err := cql.OpenStore(t.Context(), cql.Config{Hosts: hosts, Keyspace: ks, Upcaster: aggregate.Upcasters()},
			cql.Options{NoHints: true, NoHandOff: true, NoSweep: true, Observer: counter})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		ring := pii.NewKeyring(st.DataKeys(), kek, pii.Options{})
		claims, err := ring.ClaimSecret(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		commands := aggregate.NewHandler(st, time.Now, aggregate.WithSnapshots(st, 100), aggregate.WithPersonalData(ring, claims.ID), aggregate.WithEmailClaims(st.EmailClaims()))
		srv := httptest.NewServer(api.New(commands, nil, aggregate.Sealed(st, ring), nil, orderd.OpenAPI, zap.NewNop()).
			WithAdmin(nil, token).WithKeys(ring).
			WithIdempotency(api.NewIdempotency(st, st, api.IdempotencyOptions{Instance: name})).Handler())
		t.Cleanup(srv.Close)
		return srv
	}
	srv, srv2 := instance("rounds"), instance("rounds-2")

	// do sends one command and returns the id in its answer and what it
	// cost.
	do := func(t *testing.T, key, method, path, body string) (string, rounds, *http.Response, []byte) {
		t.Helper()
		counter.Take()
		url := srv.URL + path
		if p, ok := strings.CutPrefix(path, "2:"); ok { // the other instance
			url = srv2.URL + p
		}
		req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode/100 != 2 {
			t.Fatalf("%s %s: %d %s", method, path, res.StatusCode, b)
		}
		lwt, serial := counter.Take()
		var got rounds
		for stmt, n := range lwt {
			got.lwt += n
			t.Logf("%s %s: LWT ×%d %s", method, path, n, oneLine(stmt))
		}
		for stmt, n := range serial {
			got.serial += n
			t.Logf("%s %s: SERIAL ×%d %s", method, path, n, oneLine(stmt))
		}
		var id struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(b, &id)
		return id.ID, got, res, b
	}

	got := map[string][2]rounds{}
	for i, keyed := range []bool{false, true} {
		var lastKey string
		var lastAnswer []byte
		run := func(name, method, path, body string) string {
			if keyed {
				lastKey = uuid.NewString()
			}
			id, r, _, b := do(t, lastKey, method, path, body)
			lastAnswer = b
			cost := got[name]
			cost[i] = r
			got[name] = cost
			return id
		}
		email := func() string { return fmt.Sprintf("rounds-%s@example.com", uuid.NewString()[:8]) }
		cust := run("register customer", "POST", "/v1/customers/",
			fmt.Sprintf(`{"email":%q,"first_name":"Ann","last_name":"Lee","phone":"+15550123"}`, email()))
		run("change e-mail", "POST", "/v1/customers/"+cust+"/email", fmt.Sprintf(`{"email":%q}`, email()))
		run("change phone", "POST", "/v1/customers/"+cust+"/phone", `{"phone":"+4915112345678"}`)
		items := fmt.Sprintf(`{"customer_id":%q,"items":[{"product_id":%q,"quantity":2}]}`, cust, uuid.NewString())
		order := run("create order", "POST", "/v1/orders/", items)
		if keyed {
			_, r, res, b := do(t, lastKey, "POST", "/v1/orders/", items)
			if res.Header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(b, lastAnswer) || res.StatusCode != http.StatusCreated {
				t.Fatalf("replay of a keyed create: %d %v %s; want 201 %s, replayed", res.StatusCode, res.Header, b, lastAnswer)
			}
			got["replay of create order"] = [2]rounds{{}, r}
		}
		run("update items", "PUT", "/v1/orders/"+order+"/items", fmt.Sprintf(`{"items":[{"product_id":%q,"quantity":3}]}`, uuid.NewString()))
		run("confirm", "POST", "/v1/orders/"+order+"/confirm", "")
		run("ship", "POST", "/v1/orders/"+order+"/ship", `{"tracking_number":"TRACK-1","carrier":"DHL"}`)
		run("deliver", "POST", "/v1/orders/"+order+"/deliver", `{"signature":"Ann Lee"}`)
		other := run("", "POST", "/v1/orders/", items)
		run("cancel", "POST", "/v1/orders/"+other+"/cancel", `{"reason":"changed my mind"}`)
		third := run("", "POST", "/v1/orders/", items)
		run("confirm on another instance", "POST", "2:/v1/orders/"+third+"/confirm", "")
		run("erasure", "POST", "/v1/customers/"+cust+"/erasure", "")
	}
	delete(got, "")

	names := make([]string, 0, len(got))
	for n := range got {
		names = append(names, n)
	}
	sort.Strings(names)
	var table strings.Builder
	fmt.Fprintf(&table, "%-28s %-20s %-20s\n", "command", "unkeyed", "Idempotency-Key")
	for _, n := range names {
		fmt.Fprintf(&table, "%-28s %-20s %-20s\n", n, got[n][0], got[n][1])
		if want, ok := roundsWant[n]; !ok || got[n] != want {
			t.Errorf("%s: %v unkeyed, %v keyed; want %v, %v", n, got[n][0], got[n][1], want[0], want[1])
		}
	}
	t.Logf("Paxos rounds per command on CQL:\n%s", table.String())
}

// oneLine squeezes a statement's white space, for the log.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
