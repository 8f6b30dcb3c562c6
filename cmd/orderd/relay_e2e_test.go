package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/orderd/orderd/internal/cli"
	"github.com/orderd/orderd/internal/relay/kafkatest"
)

// kafkaEnv is the environment of an orderd that relays to the test broker,
// into topics of its own (a fresh prefix).
func kafkaEnv(t testing.TB, brokers []string, extra ...string) map[string]string {
	env := map[string]string{
		"ORDERD_KAFKA_BROKERS":      strings.Join(brokers, ","),
		"ORDERD_KAFKA_TOPIC_PREFIX": "t" + strings.ReplaceAll(uuid.NewString()[:8], "-", "") + "-",
		"ORDERD_RETRY_MAX":          "500ms",
	}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	return env
}

// kcatRecord is one line of `kcat -J`.
type kcatRecord struct {
	Partition int      `json:"partition"`
	Offset    int64    `json:"offset"`
	Key       string   `json:"key"`
	Payload   string   `json:"payload"`
	Headers   []string `json:"headers"` // name, value, name, value, …
}

func (r kcatRecord) header(name string) string {
	for i := 0; i+1 < len(r.Headers); i += 2 {
		if r.Headers[i] == name {
			return r.Headers[i+1]
		}
	}
	return ""
}

// kcat consumes topic from the beginning with Debian's kcat, an independent
// client, until it has at least n records.
func kcat(t *testing.T, broker, topic string, n int) []kcatRecord {
	t.Helper()
	bin, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("kcat is not installed (scripts/deps.sh installs it)")
		}
		t.Skip("kcat is not installed (scripts/deps.sh installs it)")
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := exec.Command(bin, "-b", broker, "-t", topic, "-C", "-o", "beginning", "-e", "-J", "-q").Output()
		var recs []kcatRecord
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r kcatRecord
			if json.Unmarshal(sc.Bytes(), &r) == nil {
				recs = append(recs, r)
			}
		}
		if err == nil && len(recs) >= n {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("kcat read %d of %d records from %s (err %v)", len(recs), n, topic, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestRelayLifecycle: the README walkthrough's events arrive on
// order-events, read by kcat: every event once, keyed by the order id, in
// sequence order, with the CloudEvents headers and the envelope's ids.
func TestRelayLifecycle(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	env := kafkaEnv(t, brokers)
	s := start(t, "", env)
	cust := s.registerCustomer(t, "relay@example.com")
	o := s.createOrder(t, cust.ID)
	id := o.ID.String()
	s.do(t, "PUT", "/v1/orders/"+id+"/items", map[string]any{"items": []itemBody{{uuid.NewString(), 4}}}, http.StatusOK)
	s.do(t, "POST", "/v1/orders/"+id+"/confirm", nil, http.StatusOK)
	s.do(t, "POST", "/v1/orders/"+id+"/ship", map[string]any{"tracking_number": "T-1", "carrier": "DHL"}, http.StatusOK)
	s.do(t, "POST", "/v1/orders/"+id+"/deliver", nil, http.StatusOK)
	events := s.events(t, "orders", o.ID)

	recs := kcat(t, brokers[0], env["ORDERD_KAFKA_TOPIC_PREFIX"]+"order-events", len(events))
	checkKcat(t, "order-events", recs)
	if len(recs) != len(events) {
		t.Fatalf("%d records on order-events, want %d", len(recs), len(events))
	}
	for i, r := range recs {
		e := events[i]
		var data map[string]any
		if err := json.Unmarshal([]byte(r.Payload), &data); err != nil {
			t.Fatalf("record %d payload %q: %v", i, r.Payload, err)
		}
		checks := map[string][2]string{
			"key":              {r.Key, id},
			"ce_id":            {r.header("ce_id"), e.EventID.String()},
			"ce_type":          {r.header("ce_type"), e.EventType},
			"ce_subject":       {r.header("ce_subject"), id},
			"ce_sequence":      {r.header("ce_sequence"), strconv.FormatInt(e.Sequence, 10)},
			"ce_specversion":   {r.header("ce_specversion"), "1.0"},
			"content-type":     {r.header("content-type"), "application/json"},
			"ce_correlationid": {r.header("ce_correlationid"), e.CorrelationID.String()},
			"ce_causationid":   {r.header("ce_causationid"), e.CausationID.String()},
			"ce_schemaversion": {r.header("ce_schemaversion"), strconv.Itoa(e.EventVersion)},
		}
		for name, c := range checks {
			if c[0] != c[1] {
				t.Errorf("record %d (partition %d offset %d): %s = %q, want %q", i, r.Partition, r.Offset, name, c[0], c[1])
			}
		}
		if fmt.Sprint(data) != fmt.Sprint(e.Data) {
			t.Errorf("record %d payload %v, want the event's data %v", i, data, e.Data)
		}
	}
	customers := kcat(t, brokers[0], env["ORDERD_KAFKA_TOPIC_PREFIX"]+"customer-events", 1)
	checkKcat(t, "customer-events", customers)
	if customers[0].header("ce_type") != "CustomerRegistered" {
		t.Errorf("customer-events: %+v", customers[0])
	}
}

// metrics scrapes /metrics into series → value ("name{labels}" as the
// exposition format writes it).
func (s *service) metrics(t testing.TB) map[string]float64 {
	t.Helper()
	resp, err := s.http.Get(s.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// waitRelayed waits until the relay has published everything committed.
func (s *service) waitRelayed(t testing.TB, timeout time.Duration) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := s.metrics(t)
		if v, ok := m[`orderd_feed_lag_events{consumer="relay"}`]; ok && v == 0 {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay still %v events behind after %s", m[`orderd_feed_lag_events{consumer="relay"}`], timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ownBroker starts a broker of the test's own with scripts/kafka.sh, so
// that the test can stop it without disturbing the other tests' broker. Its
// port is the shared broker's (KAFKA_PORT, default 9092) plus 10000, so
// that it follows a moved KAFKA_PORT and never takes the shared broker's
// ports (the script's controller listens on the port after). It is stopped
// and its data deleted when the test ends.
func ownBroker(t *testing.T) (addr string, stop, start func()) {
	t.Helper()
	return ownBrokerAt(t, 10000)
}

// ownBrokerAt is ownBroker on the shared broker's port plus offset (the
// controller takes the port after it, so offsets differ by 2 at least).
func ownBrokerAt(t *testing.T, offset int) (addr string, stop, start func()) {
	t.Helper()
	kafkatest.Brokers(t) // the script's prerequisites are there, or skip/fail as usual
	port := kafkatest.Port(t) + offset
	if port > 65534 {
		port -= 20000
	}
	script := func(cmd string) {
		t.Helper()
		c := exec.Command("../../scripts/kafka.sh", cmd)
		c.Env = append(os.Environ(), fmt.Sprintf("KAFKA_PORT=%d", port))
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("kafka.sh %s on port %d: %v\n%s", cmd, port, err, out)
		}
	}
	script("start")
	t.Cleanup(func() { script("reset") })
	return fmt.Sprintf("127.0.0.1:%d", port), func() { script("stop") }, func() { script("start") }
}

// TestRelayBrokerOutage stops the broker for 30 s under load: commands are
// accepted throughout, the breaker opens and closes again, nothing is
// dead-lettered, and every event reaches the topic in order.
func TestRelayBrokerOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("stops a broker for 30 s")
	}
	broker, stopBroker, startBroker := ownBroker(t)
	env := kafkaEnv(t, []string{broker}, "ORDERD_BREAKER_OPEN", "3s")
	s := start(t, "", env)
	cust := s.registerCustomer(t, "outage@example.com")

	created := make(chan uuid.UUID, 10000)
	stopLoad := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		for {
			select {
			case <-stopLoad:
				return
			case <-time.After(20 * time.Millisecond):
			}
			body := map[string]any{"customer_id": cust.ID, "items": []itemBody{{uuid.NewString(), 1}}}
			r := s.call(t, "POST", "/v1/orders", body, nil, true)
			var res commandResult
			if r.Status != http.StatusCreated || json.Unmarshal(r.Body, &res) != nil {
				t.Errorf("create during the outage: %d %s", r.Status, r.Body)
				return
			}
			// A second event of the same order, so that order per
			// aggregate is at stake during the outage too.
			if c := s.call(t, "POST", "/v1/orders/"+res.ID.String()+"/confirm", nil, nil, true); c.Status != http.StatusOK {
				t.Errorf("confirm during the outage: %d %s", c.Status, c.Body)
				return
			}
			created <- res.ID
		}
	}()
	time.Sleep(2 * time.Second)
	stopBroker()
	t.Log("broker stopped")
	time.Sleep(30 * time.Second)
	during := len(created)
	startBroker()
	t.Log("broker started")
	time.Sleep(2 * time.Second)
	close(stopLoad)
	<-loadDone
	close(created)
	t.Logf("%d orders created, %d of them before the broker came back", len(created), during)

	m := s.waitRelayed(t, 120*time.Second)
	if m[`orderd_relay_breaker_transitions_total{to="open"}`] < 1 || m[`orderd_relay_breaker_transitions_total{to="closed"}`] < 1 {
		t.Errorf("the breaker did not open and close: %v", m)
	}
	if m["orderd_relay_breaker_state"] != 0 {
		t.Errorf("breaker state %v at the end, want 0 (closed)", m["orderd_relay_breaker_state"])
	}
	if m[`orderd_dead_letters{state="failed"}`] != 0 || m[`orderd_dead_letters{state="parked"}`] != 0 {
		t.Errorf("dead letters after an outage: %v failed, %v parked", m[`orderd_dead_letters{state="failed"}`], m[`orderd_dead_letters{state="parked"}`])
	}
	t.Logf("retries during the outage: %v", m["orderd_relay_retries_total"])

	want := map[string]bool{}
	for id := range created {
		want[id.String()] = true
	}
	msgs := consumeAll(t, []string{broker}, env["ORDERD_KAFKA_TOPIC_PREFIX"]+"order-events")
	checkMessages(t, "order-events", msgs)
	top := map[string]int{} // per order, the highest sequence seen so far
	ids := map[string]bool{}
	dups := 0
	for _, m := range msgs {
		key := string(m.Key)
		seq, _ := strconv.Atoi(kafkaHeader(m.Headers, "ce_sequence"))
		if seq > top[key]+1 {
			t.Fatalf("order %s: sequence %d on the topic before %d", key, seq, top[key]+1)
		}
		top[key] = max(top[key], seq)
		if id := kafkaHeader(m.Headers, "ce_id"); ids[id] {
			dups++
		} else {
			ids[id] = true
		}
	}
	for id := range want {
		if top[id] != 2 {
			t.Errorf("order %s: %d of its 2 events on the topic", id, top[id])
		}
	}
	t.Logf("%d records, %d duplicates", len(msgs), dups)
}

// TestRelayKill9 kills orderd with SIGKILL while it publishes. After a
// restart every stored event is on the topic; duplicates are allowed.
func TestRelayKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	brokers := kafkatest.Brokers(t)
	env := kafkaEnv(t, brokers)
	dir := t.TempDir()
	p := startProcess(t, dir, env)
	s := p.client(t, dir)
	cust := s.registerCustomer(t, "kill9@example.com")
	// Eight clients create orders while the relay publishes them; the kill
	// lands in the middle of both.
	body := fmt.Sprintf(`{"customer_id":%q,"items":[{"product_id":%q,"quantity":1}]}`, cust.ID, uuid.NewString())
	var acked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := s.http.Post(s.base+"/v1/orders", "application/json", strings.NewReader(body))
				if err != nil {
					return // killed
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusCreated {
					acked.Add(1)
				}
			}
		})
	}
	time.Sleep(2 * time.Second)
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	close(stop)
	wg.Wait()

	p2 := startProcess(t, dir, env)
	s2 := p2.client(t, dir)
	s2.waitRelayed(t, 60*time.Second)
	stored := int(scalar(t, s2.eventsDB(), `SELECT count(*) FROM events WHERE aggregate_type = 'Order'`))
	msgs := consumeAll(t, brokers, env["ORDERD_KAFKA_TOPIC_PREFIX"]+"order-events")
	checkMessages(t, "order-events", msgs)
	ids := map[string]bool{}
	for _, m := range msgs {
		ids[kafkaHeader(m.Headers, "ce_id")] = true
	}
	if len(ids) != stored {
		t.Fatalf("%d distinct events on the topic, %d stored", len(ids), stored)
	}
	t.Logf("%d acknowledged creates before the kill; %d stored; %d records on the topic, %d of them duplicates",
		acked.Load(), stored, len(msgs), len(msgs)-len(ids))

	// SIGTERM drains: the process exits 0 with both feed consumers'
	// checkpoints at the store's head.
	s2.createOrder(t, cust.ID)
	s2.waitRelayed(t, 30*time.Second)
	if err := p2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p2.cmd.Wait(); err != nil {
		t.Fatalf("orderd after SIGTERM: %v", err)
	}
	head := scalar(t, filepath.Join(dir, "events.db"), `SELECT max(position) FROM events`)
	relayed := scalar(t, filepath.Join(dir, "events.db"), `SELECT position FROM feed_progress WHERE consumer = 'relay'`)
	projected := scalar(t, filepath.Join(dir, "events.db"), `SELECT position FROM feed_progress WHERE consumer = 'projector'`)
	if relayed != head || projected != head {
		t.Fatalf("after SIGTERM: head %d, relay progress %d, projector progress %d", head, relayed, projected)
	}
}

func kafkaHeader(hs []kafka.Header, key string) string {
	for _, h := range hs {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// TestRelayDeadLetterReplay: an order whose OrderCreated is over its
// topic's size limit is dead-lettered and its confirmation parked behind it,
// while another order flows. The operator sees both in the admin API, raises
// the limit, and replays with `orderd dlq replay`: the two events go out in
// order and the order's later events flow again.
func TestRelayDeadLetterReplay(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	orders := kafkatest.Topic(t, brokers, 3, kafka.ConfigEntry{ConfigName: "max.message.bytes", ConfigValue: "4096"})
	customers := kafkatest.Topic(t, brokers, 1)
	env := kafkaEnv(t, brokers, "ORDERD_KAFKA_TOPICS", "Order="+orders+",Customer="+customers, "ORDERD_ADMIN_TOKEN", "s3cret")
	s := start(t, "", env)
	cust := s.registerCustomer(t, "dlq@example.com")

	var lines []itemBody // 100 lines: about 6 KB of JSON
	for range 100 {
		lines = append(lines, itemBody{uuid.NewString(), 1})
	}
	big := s.createOrder(t, cust.ID, lines...)
	s.do(t, "POST", "/v1/orders/"+big.ID.String()+"/confirm", nil, http.StatusOK)
	small := s.createOrder(t, cust.ID)
	s.do(t, "POST", "/v1/orders/"+small.ID.String()+"/confirm", nil, http.StatusOK)
	m := s.waitRelayed(t, 60*time.Second)
	if m[`orderd_dead_letters{state="failed"}`] != 1 || m[`orderd_dead_letters{state="parked"}`] != 1 {
		t.Fatalf("dead letters: %v failed, %v parked; want 1 and 1", m[`orderd_dead_letters{state="failed"}`], m[`orderd_dead_letters{state="parked"}`])
	}
	auth := []string{"Authorization", "Bearer s3cret"}
	var list struct {
		DeadLetters []struct {
			ID          int64     `json:"id"`
			AggregateID uuid.UUID `json:"aggregate_id"`
			Sequence    int64
			State       string
			Error       *string
		} `json:"dead_letters"`
	}
	s.do(t, "GET", "/v1/admin/dlq", nil, http.StatusOK, auth...).json(t, &list)
	if l := list.DeadLetters; len(l) != 2 || l[0].AggregateID != big.ID || l[0].State != "failed" || l[0].Error == nil ||
		l[1].AggregateID != big.ID || l[1].State != "parked" || l[1].Sequence != 2 {
		t.Fatalf("dead letters %+v", list.DeadLetters)
	}
	if r := s.call(t, "GET", "/v1/admin/dlq", nil, map[string]string{"Authorization": "Bearer wrong"}, true); r.Status != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", r.Status)
	}
	small2 := kafkatest.Consume(t, brokers, orders, 2, 30*time.Second)
	checkMessages(t, "order-events", small2)
	for _, m := range small2 {
		if string(m.Key) != small.ID.String() {
			t.Fatalf("record of %s on the topic while it is dead-lettered", m.Key)
		}
	}

	kafkatest.AlterTopic(t, brokers, orders, "max.message.bytes", "1048588")
	var out, errOut bytes.Buffer
	getenv := func(k string) string {
		return map[string]string{"ORDERD_ADMIN_URL": s.base, "ORDERD_ADMIN_TOKEN": "s3cret"}[k]
	}
	if err := cli.DLQ(t.Context(), []string{"replay", strconv.FormatInt(list.DeadLetters[0].ID, 10)}, getenv, &out, &errOut); err != nil {
		t.Fatalf("orderd dlq replay: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "2 event(s) published") {
		t.Fatalf("orderd dlq replay said %q", out.String())
	}
	s.do(t, "POST", "/v1/orders/"+big.ID.String()+"/ship", map[string]any{"tracking_number": "T", "carrier": "C"}, http.StatusOK)
	s.waitRelayed(t, 30*time.Second)

	var seqs []string
	replayed := consumeAll(t, brokers, orders)
	checkMessages(t, "order-events", replayed)
	for _, m := range replayed {
		if string(m.Key) == big.ID.String() {
			seqs = append(seqs, kafkaHeader(m.Headers, "ce_sequence"))
		}
	}
	if strings.Join(seqs, ",") != "1,2,3" {
		t.Fatalf("the replayed order's records: sequences %v, want 1,2,3", seqs)
	}
	if m := s.metrics(t); m[`orderd_dead_letters{state="failed"}`] != 0 || m[`orderd_dead_letters{state="parked"}`] != 0 {
		t.Fatalf("dead letters left after the replay")
	}
}

// consumeAll reads every record on topic, duplicates included, once the
// relay has published everything: the end offsets say how many there are.
func consumeAll(t *testing.T, brokers []string, topic string) []kafka.Message {
	t.Helper()
	total := int64(0)
	for _, n := range kafkatest.EndOffsets(t, brokers, topic) {
		total += n
	}
	return kafkatest.Consume(t, brokers, topic, int(total), 60*time.Second)
}

// TestRelayBrokerDownAtStart: with Kafka unreachable from the start the
// relay's worker fails and is restarted by the supervisor, commands are
// accepted and kept in the outbox, and /readyz says the relay is degraded
// while the service stays ready.
func TestRelayBrokerDownAtStart(t *testing.T) {
	env := kafkaEnv(t, []string{"127.0.0.1:1"}) // nothing listens on port 1
	s := start(t, "", env)
	cust := s.registerCustomer(t, "down@example.com")
	s.createOrder(t, cust.ID)
	var ready struct {
		Status     string
		Components map[string]struct {
			Status, Detail string
			Lag            *int64
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.do(t, "GET", "/readyz", nil, http.StatusOK).json(t, &ready)
		c := ready.Components["relay"]
		if c.Status == "degraded" && c.Lag != nil && *c.Lag == 2 { // the customer, the order
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz %+v", ready)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ready.Status != "ready" {
		t.Fatalf("a Kafka outage made the service unready: %+v", ready)
	}
	m := s.metrics(t)
	if m[`orderd_feed_lag_events{consumer="relay"}`] != 2 || m[`orderd_feed_lag_seconds{consumer="relay"}`] <= 0 {
		t.Fatalf("relay lag %v events, %v s", m[`orderd_feed_lag_events{consumer="relay"}`], m[`orderd_feed_lag_seconds{consumer="relay"}`])
	}
}

// TestRelayTurnedOnLater: events committed while no broker was configured
// wait in the outbox and are published from the first once one is.
func TestRelayTurnedOnLater(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	dir := t.TempDir()
	s1 := start(t, dir, nil)
	cust := s1.registerCustomer(t, "later@example.com")
	o := s1.createOrder(t, cust.ID)
	s1.do(t, "POST", "/v1/orders/"+o.ID.String()+"/confirm", nil, http.StatusOK)
	if err := s1.stop(); err != nil {
		t.Fatal(err)
	}

	env := kafkaEnv(t, brokers)
	s2 := start(t, dir, env)
	s2.waitRelayed(t, 60*time.Second)
	var seqs []string
	orders := consumeAll(t, brokers, env["ORDERD_KAFKA_TOPIC_PREFIX"]+"order-events")
	checkMessages(t, "order-events", orders)
	for _, m := range orders {
		seqs = append(seqs, kafkaHeader(m.Headers, "ce_sequence"))
	}
	if strings.Join(seqs, ",") != "1,2" {
		t.Fatalf("order-events after turning the relay on: sequences %v, want 1,2", seqs)
	}
	customers := consumeAll(t, brokers, env["ORDERD_KAFKA_TOPIC_PREFIX"]+"customer-events")
	checkMessages(t, "customer-events", customers)
	if len(customers) != 1 {
		t.Fatalf("%d records on customer-events, want 1", len(customers))
	}
}
