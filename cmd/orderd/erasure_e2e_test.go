package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/orderd/orderd/internal/relay/kafkatest"
	"github.com/orderd/orderd/pkg/piidecrypt"
)

// erasureToken is the admin token of the erasure tests.
const erasureToken = "erase-s3cret"

// TestErasure, on both engines with real Kafka: a customer's personal
// fields (e-mail, names, phone, an order's signature) are never stored or
// published in plaintext, before or after its erasure (a byte search of
// every data file, WAL included, or of a dump of every CQL table, and of
// every Kafka record); an authorised consumer decrypts the records with
// pkg/piidecrypt and the key endpoint until the erasure, and not after;
// after the erasure the customer reads the same erased view from the API,
// time travel, its history and a rebuild, its orders keep working and its
// address can be registered again.
func TestErasure(t *testing.T) {
	for _, engine := range []string{"sqlite", "scylla"} {
		t.Run(engine, func(t *testing.T) {
			brokers := kafkatest.Brokers(t)
			env := kafkaEnv(t, brokers, "ORDERD_ADMIN_TOKEN", erasureToken)
			if engine == "scylla" {
				for k, v := range scyllaEnv(t) {
					env[k] = v
				}
				// Schema changes on a shared, loaded node take their time.
				env["ORDERD_SCYLLA_TIMEOUT"] = "30s"
			}
			testErasure(t, engine, brokers, env)
		})
	}
}

func testErasure(t *testing.T, engine string, brokers []string, env map[string]string) {
	s := start(t, "", env)
	auth := []string{"Authorization", "Bearer " + erasureToken}
	tag := strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	secrets := map[string]string{
		"email":     "grace.hopper." + tag + "@example.com",
		"email2":    "amazing.grace." + tag + "@example.org",
		"first":     "Gracefirst" + tag,
		"last":      "Hopperlast" + tag,
		"phone":     "+4479" + fmt.Sprint(10000000+int(uuid.New().ID()%89999999)),
		"phone2":    "+4478" + fmt.Sprint(10000000+int(uuid.New().ID()%89999999)),
		"signature": "Signed by G. Hopper " + tag,
	}
	var reg commandResult
	s.do(t, "POST", "/v1/customers", map[string]any{"email": secrets["email"], "first_name": secrets["first"],
		"last_name": secrets["last"], "phone": secrets["phone"]}, http.StatusCreated, "Idempotency-Key", "reg-"+tag).json(t, &reg)
	c := reg.ID.String()
	s.do(t, "POST", "/v1/customers/"+c+"/email", map[string]any{"email": secrets["email2"]}, http.StatusOK)
	s.do(t, "POST", "/v1/customers/"+c+"/phone", map[string]any{"phone": secrets["phone2"]}, http.StatusOK, "Idempotency-Key", "phone-"+tag)
	// A refusal kept as an Idempotency-Key's answer does not repeat the address.
	if p := s.do(t, "POST", "/v1/customers", map[string]any{"email": secrets["email2"], "first_name": "X", "last_name": "Y"},
		http.StatusConflict, "Idempotency-Key", "taken-"+tag).problem(t); p.Code != "email_taken" || strings.Contains(p.Detail, secrets["email2"]) {
		t.Fatalf("registration of a taken address: %+v", p)
	}
	o := s.createOrder(t, reg.ID)
	oid := o.ID.String()
	s.do(t, "POST", "/v1/orders/"+oid+"/confirm", nil, http.StatusOK)
	s.do(t, "POST", "/v1/orders/"+oid+"/ship", map[string]any{"tracking_number": "T-" + tag, "carrier": "DHL"}, http.StatusOK)
	s.do(t, "POST", "/v1/orders/"+oid+"/deliver", map[string]any{"signature": secrets["signature"]}, http.StatusOK)

	// Before: reads decrypt.
	var cust customerBody
	s.do(t, "GET", "/v1/customers/"+c+"?min_version=3", nil, http.StatusOK).json(t, &cust)
	if cust.Email != secrets["email2"] || cust.FirstName != secrets["first"] || cust.LastName != secrets["last"] ||
		cust.Phone == nil || *cust.Phone != secrets["phone2"] || cust.Erased {
		t.Fatalf("customer before the erasure: %+v", cust)
	}
	if hist := s.events(t, "customers", reg.ID); hist[0].Data["email"] != secrets["email"] || hist[0].Metadata["pii_subject"] != c {
		t.Fatalf("history before the erasure: %+v", hist[0])
	}

	// Kafka: the records carry ciphertext, which the consumer package
	// decrypts with the key endpoint's key.
	prefix := env["ORDERD_KAFKA_TOPIC_PREFIX"]
	custRecs := kafkatest.Consume(t, brokers, prefix+"customer-events", 3, 60*time.Second)
	orderRecs := kafkatest.Consume(t, brokers, prefix+"order-events", 4, 60*time.Second)
	keys := piidecrypt.NewKeys(s.base, erasureToken, nil)
	dec := piidecrypt.New(keys)
	first := custRecs[0]
	plain, err := dec.Record(t.Context(), kafkaHeader(first.Headers, "ce_type"), kafkaHeader(first.Headers, "ce_piisubject"), first.Value)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(plain, []byte(secrets["email"])) || !bytes.Contains(plain, []byte(secrets["last"])) {
		t.Fatalf("decrypted record: %s", plain)
	}
	delivered := orderRecs[len(orderRecs)-1]
	if kafkaHeader(delivered.Headers, "ce_piisubject") != c {
		t.Fatalf("OrderDelivered's ce_piisubject = %q, want its customer %s", kafkaHeader(delivered.Headers, "ce_piisubject"), c)
	}
	if plain, err := dec.Record(t.Context(), "OrderDelivered", c, delivered.Value); err != nil || !bytes.Contains(plain, []byte(secrets["signature"])) {
		t.Fatalf("decrypted OrderDelivered: %s, %v", plain, err)
	}
	if r := s.call(t, "GET", "/v1/keys/"+c, nil, nil, false); r.Status != http.StatusUnauthorized {
		t.Fatalf("the key without a token: %d %s", r.Status, r.Body)
	}
	noPlaintext(t, engine, s, env, secrets, brokers, "before the erasure")

	// Erase, twice (the second changes nothing).
	var erased commandResult
	if r := s.call(t, "POST", "/v1/customers/"+c+"/erasure", nil, nil, false); r.Status != http.StatusUnauthorized {
		t.Fatalf("an erasure without a token: %d %s", r.Status, r.Body)
	}
	s.do(t, "POST", "/v1/customers/"+c+"/erasure", nil, http.StatusOK, auth...).json(t, &erased)
	if again := s.do(t, "POST", "/v1/customers/"+c+"/erasure", nil, http.StatusOK, auth...); !strings.Contains(string(again.Body), fmt.Sprint(erased.Version)) {
		t.Fatalf("second erasure: %s, want version %d", again.Body, erased.Version)
	}
	var after customerBody
	s.do(t, "GET", fmt.Sprintf("/v1/customers/%s?min_version=%d", c, erased.Version), nil, http.StatusOK).json(t, &after)
	if !after.Erased || after.Email != "[erased]" || after.FirstName != "[erased]" || after.LastName != "[erased]" || after.Phone == nil || *after.Phone != "[erased]" {
		t.Fatalf("customer after the erasure: %+v", after)
	}
	var past customerBody
	s.do(t, "GET", fmt.Sprintf("/v1/customers/%s?as_of_version=%d", c, erased.Version), nil, http.StatusOK).json(t, &past)
	if !sameView(past, after) {
		t.Errorf("time travel to the current version:\n %+v\nread model:\n %+v", past, after)
	}
	var early customerBody
	s.do(t, "GET", "/v1/customers/"+c+"?as_of_version=1", nil, http.StatusOK).json(t, &early)
	if early.Email != "[erased]" || early.LastName != "[erased]" {
		t.Errorf("time travel to before the erasure: %+v", early)
	}
	for _, e := range s.events(t, "customers", reg.ID) {
		for _, f := range []string{"email", "first_name", "last_name", "phone"} {
			if v, ok := e.Data[f]; ok && v != "[erased]" {
				t.Errorf("history after the erasure: %s %s = %v", e.EventType, f, v)
			}
		}
	}
	if p := s.do(t, "GET", "/v1/keys/"+c, nil, http.StatusGone, auth...).problem(t); p.Code != "subject_erased" {
		t.Errorf("key after the erasure: %+v", p)
	}
	if p := s.do(t, "POST", "/v1/customers/"+c+"/phone", map[string]any{"phone": "+14155550100"}, http.StatusConflict).problem(t); p.Code != "customer_erased" {
		t.Errorf("a change of an erased customer: %+v", p)
	}
	// Kafka: CustomerErased arrives; old records are unreadable.
	custRecs = kafkatest.Consume(t, brokers, prefix+"customer-events", 4, 60*time.Second)
	if last := custRecs[len(custRecs)-1]; kafkaHeader(last.Headers, "ce_type") != "CustomerErased" {
		t.Errorf("the last customer record is %s, want CustomerErased", kafkaHeader(last.Headers, "ce_type"))
	}
	fresh := piidecrypt.New(piidecrypt.NewKeys(s.base, erasureToken, nil))
	if _, err := fresh.Record(t.Context(), kafkaHeader(first.Headers, "ce_type"), c, first.Value); !errors.Is(err, piidecrypt.ErrErased) {
		t.Errorf("decrypting an old record after the erasure: %v, want ErrErased", err)
	}
	keys.Forget(reg.ID)
	if _, err := dec.Record(t.Context(), "OrderDelivered", c, delivered.Value); !errors.Is(err, piidecrypt.ErrErased) {
		t.Errorf("a consumer that forgot the key on CustomerErased decrypts: %v", err)
	}
	// Orders keep working; the address is free again.
	var ord orderBody
	s.do(t, "GET", "/v1/orders/"+oid+"?min_version=4", nil, http.StatusOK).json(t, &ord)
	if ord.Status != "delivered" {
		t.Errorf("the erased customer's order: %+v", ord)
	}
	s.createOrder(t, reg.ID)
	other := s.registerCustomer(t, secrets["email2"])
	// A rebuild shows the same erased view.
	s.do(t, "POST", "/v1/admin/rebuilds", nil, http.StatusAccepted, auth...)
	waitUntil(t, "the rebuild", func() bool {
		var r rebuildBody
		s.do(t, "GET", "/v1/admin/rebuilds/latest", nil, http.StatusOK, auth...).json(t, &r)
		return r.State == "done"
	})
	var rebuilt customerBody
	s.do(t, "GET", "/v1/customers/"+c, nil, http.StatusOK).json(t, &rebuilt)
	if !sameView(rebuilt, after) {
		t.Errorf("after a rebuild:\n %+v\nbefore:\n %+v", rebuilt, after)
	}
	_ = other
	noPlaintext(t, engine, s, env, secrets, brokers, "after the erasure")
	// Every record, encrypted fields, ce_piisubject and CustomerErased
	// included, is as asyncapi.yaml says.
	checkMessages(t, "customer-events", consumeAll(t, brokers, prefix+"customer-events"))
	checkMessages(t, "order-events", consumeAll(t, brokers, prefix+"order-events"))
}

// customerBody is a customer as GET /v1/customers/{id} answers it.
type customerBody struct {
	ID           uuid.UUID
	Email        string
	FirstName    string `json:"first_name"`
	LastName     string `json:"last_name"`
	Phone        *string
	Erased       bool
	Version      int64
	RegisteredAt time.Time `json:"registered_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// sameView compares what the customer shows, times to the millisecond (a
// CQL read model keeps no more).
func sameView(a, b customerBody) bool {
	phone := func(p *string) string {
		if p == nil {
			return "<nil>"
		}
		return *p
	}
	return a.ID == b.ID && a.Email == b.Email && a.FirstName == b.FirstName && a.LastName == b.LastName &&
		phone(a.Phone) == phone(b.Phone) && a.Erased == b.Erased && a.Version == b.Version &&
		a.RegisteredAt.Truncate(time.Millisecond).Equal(b.RegisteredAt.Truncate(time.Millisecond)) &&
		a.UpdatedAt.Truncate(time.Millisecond).Equal(b.UpdatedAt.Truncate(time.Millisecond))
}

// noPlaintext fails t if any secret is in plaintext in the store (every
// file of the data directory, WAL included; or every row of every table of
// the keyspace) or in any record of the run's Kafka topics.
func noPlaintext(t *testing.T, engine string, s *service, env map[string]string, secrets map[string]string, brokers []string, when string) {
	t.Helper()
	var where []struct {
		name string
		data []byte
	}
	add := func(name string, data []byte) {
		where = append(where, struct {
			name string
			data []byte
		}{name, data})
	}
	if engine == "sqlite" {
		entries, err := os.ReadDir(s.dataDir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			data, err := os.ReadFile(filepath.Join(s.dataDir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			add(e.Name(), data)
		}
	} else {
		for table, dump := range dumpKeyspace(t, strings.Split(env["ORDERD_SCYLLA_HOSTS"], ","), env["ORDERD_SCYLLA_KEYSPACE"]) {
			add("table "+table, dump)
		}
	}
	prefix := env["ORDERD_KAFKA_TOPIC_PREFIX"]
	for _, topic := range []string{prefix + "customer-events", prefix + "order-events"} {
		for _, m := range consumeAll(t, brokers, topic) {
			add("a record of "+topic, recordBytes(m))
		}
	}
	for name, secret := range secrets {
		for _, w := range where {
			if bytes.Contains(w.data, []byte(secret)) {
				t.Errorf("%s: %s holds the %s %q in plaintext", when, w.name, name, secret)
			}
		}
	}
}

// recordBytes is a record's key, value and headers, together.
func recordBytes(m kafka.Message) []byte {
	b := append(append([]byte{}, m.Key...), m.Value...)
	for _, h := range m.Headers {
		b = append(append(b, h.Key...), h.Value...)
	}
	return b
}

// dumpKeyspace reads every row of every table of keyspace, each value's
// bytes as stored (blobs raw, text as UTF-8), by table.
func dumpKeyspace(t *testing.T, hosts []string, keyspace string) map[string][]byte {
	t.Helper()
	cluster := gocql.NewCluster(hosts...)
	cluster.Keyspace = keyspace
	cluster.Timeout = 30 * time.Second
	cluster.Consistency = gocql.One
	sess, err := cluster.CreateSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var tables []string
	iter := sess.Query(`SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?`, keyspace).WithContext(ctx).Iter()
	var name string
	for iter.Scan(&name) {
		tables = append(tables, name)
	}
	if err := iter.Close(); err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, table := range tables {
		var dump []byte
		it := sess.Query(`SELECT * FROM ` + table).WithContext(ctx).PageSize(1000).Iter()
		for {
			row := map[string]any{}
			if !it.MapScan(row) {
				break
			}
			for _, v := range row {
				dump = appendValue(dump, v)
			}
		}
		if err := it.Close(); err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
		out[table] = dump
	}
	return out
}

func appendValue(b []byte, v any) []byte {
	switch v := v.(type) {
	case []byte:
		return append(append(b, v...), 0)
	case string:
		return append(append(b, v...), 0)
	case map[string]string:
		for k, x := range v {
			b = append(append(append(b, k...), 0), x...)
		}
		return append(b, 0)
	default:
		return append(b, fmt.Sprint(v)+"\x00"...)
	}
}
