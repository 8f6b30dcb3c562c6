package main

import (
	"database/sql"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/relay/kafkatest"
)

// TestEmailUnique: on the embedded store, an address another customer
// holds is refused in any case, on registration and on change, and a
// change frees the old address for others.
func TestEmailUnique(t *testing.T) { checkEmailUnique(t, start(t, "", nil)) }

// TestEmailUniqueCassandra is TestEmailUnique on the CQL store.
func TestEmailUniqueCassandra(t *testing.T) { checkEmailUnique(t, start(t, "", scyllaEnv(t))) }

// TestEmailRace: 32 registrations of one address, in as many spellings of
// its case, race on the embedded store: exactly one is created.
func TestEmailRace(t *testing.T) {
	s := start(t, "", nil)
	checkEmailRace(t, s)
	db, err := sql.Open("sqlite", "file:"+s.eventsDB()+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM events WHERE event_type = 'CustomerRegistered'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("%d CustomerRegistered stored, want 1", n)
	}
}

// TestEmailRaceCassandra is TestEmailRace on the CQL store, where the
// claims meet in a lightweight transaction.
func TestEmailRaceCassandra(t *testing.T) { checkEmailRace(t, start(t, "", scyllaEnv(t))) }

func registerBody(email string) map[string]any {
	return map[string]any{"email": email, "first_name": "Ann", "last_name": "Lee"}
}

func checkTaken(t *testing.T, r response) {
	t.Helper()
	if p := r.problem(t); p.Code != "email_taken" || p.Status != http.StatusConflict || p.Field != "/email" {
		t.Errorf("problem %+v, want 409 email_taken at /email", p)
	}
}

func checkEmailUnique(t *testing.T, s *service) {
	ann := s.registerCustomer(t, "Ann.Lee@Example.com").ID.String()
	checkTaken(t, s.do(t, "POST", "/v1/customers", registerBody("ann.lee@EXAMPLE.COM"), http.StatusConflict))
	checkTaken(t, s.do(t, "POST", "/v1/customers", registerBody(" ANN.LEE@example.com "), http.StatusConflict))

	bob := s.registerCustomer(t, "bob@example.com").ID.String()
	checkTaken(t, s.do(t, "POST", "/v1/customers/"+bob+"/email", map[string]any{"email": "ANN.lee@example.com"}, http.StatusConflict))
	// Ann's own address in another case is hers to take.
	s.do(t, "POST", "/v1/customers/"+ann+"/email", map[string]any{"email": "ann.lee@example.com"}, http.StatusOK)

	// Ann moves; Bob takes her old address, and a newcomer Bob's.
	s.do(t, "POST", "/v1/customers/"+ann+"/email", map[string]any{"email": "ann@example.org"}, http.StatusOK)
	s.do(t, "POST", "/v1/customers/"+bob+"/email", map[string]any{"email": "Ann.Lee@example.com"}, http.StatusOK)
	carl := s.registerCustomer(t, "BOB@example.com").ID.String()
	checkTaken(t, s.do(t, "POST", "/v1/customers/"+carl+"/email", map[string]any{"email": "ann@EXAMPLE.org"}, http.StatusConflict))

	var got struct{ Email string }
	s.do(t, "GET", "/v1/customers/"+bob+"?min_version=2", nil, http.StatusOK).json(t, &got)
	if got.Email != "Ann.Lee@example.com" {
		t.Errorf("bob's email %q, want Ann.Lee@example.com", got.Email)
	}
	// The claims are no customer's history.
	addr, _ := aggregate.ParseEmail("ann.lee@example.com")
	s.do(t, "GET", "/v1/customers/"+aggregate.EmailClaimID(addr).String()+"/events", nil, http.StatusNotFound)
}

// checkEmailRace sends 32 concurrent registrations of one address, each in
// its own case: at most one is created, the others are 409 email_taken.
// Every one may be refused when the earliest claim gave up waiting for the
// later ones to yield (the claim wait, see internal/aggregate/claims.go:
// a machine loaded enough); then nothing of them holds the address, and a
// registration after them is created.
func checkEmailRace(t *testing.T, s *service) {
	const n = 32
	var wg sync.WaitGroup
	answers := make([]response, n)
	for i := range n {
		wg.Go(func() {
			answers[i] = s.call(t, "POST", "/v1/customers", registerBody(mixedCase("race.winner@example.com", i)), nil, true)
		})
	}
	wg.Wait()
	created := 0
	for i, r := range answers {
		switch r.Status {
		case http.StatusCreated:
			created++
		case http.StatusConflict:
			checkTaken(t, r)
		default:
			t.Errorf("registration %d: %d %s", i, r.Status, r.Body)
		}
	}
	switch {
	case created > 1:
		t.Fatalf("%d registrations created, want at most 1", created)
	case created == 0:
		t.Logf("all %d racing registrations refused; the address must be free", n)
		s.registerCustomer(t, "Race.Winner@example.com")
	}
	checkTaken(t, s.do(t, "POST", "/v1/customers", registerBody("race.winner@example.com"), http.StatusConflict))
}

// mixedCase returns s with its letters upper-cased where i's bits say.
func mixedCase(s string, i int) string {
	b := []byte(s)
	for j := range b {
		if i>>(j%5)&1 == 1 {
			b[j] = strings.ToUpper(string(b[j]))[0]
		}
	}
	return string(b)
}

// TestEmailClaimsNotRelayed: the claims stay inside orderd: no record on
// any of the deployment's topics is keyed by a claim's key or typed as a
// claim (the claim streams of earlier builds), while the customers' events
// are published.
func TestEmailClaimsNotRelayed(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	env := kafkaEnv(t, brokers)
	prefix := env["ORDERD_KAFKA_TOPIC_PREFIX"]
	s := start(t, "", env)
	ann := s.registerCustomer(t, "claims@example.com").ID.String()
	s.do(t, "POST", "/v1/customers/"+ann+"/email", map[string]any{"email": "claims@example.org"}, http.StatusOK)
	s.registerCustomer(t, "Claims@example.com")

	// Were a claim an event, the feed would hand it before the last
	// customer event: once that is on Kafka, every claim was handled.
	kcat(t, brokers[0], prefix+"customer-events", 3)

	claims := map[string]bool{}
	for _, e := range []string{"claims@example.com", "claims@example.org"} {
		addr, _ := aggregate.ParseEmail(e)
		claims[aggregate.EmailClaimID(addr).String()] = true
	}
	topics := topicsWithPrefix(t, brokers[0], prefix)
	if len(topics) == 0 {
		t.Fatalf("no topic with prefix %s", prefix)
	}
	for _, topic := range topics {
		total := int64(0)
		for _, end := range kafkatest.EndOffsets(t, brokers, topic) {
			total += end
		}
		for _, m := range kafkatest.Consume(t, brokers, topic, int(total), 30*time.Second) {
			if claims[string(m.Key)] || messageHeader(m, "ce_aggregatetype") == aggregate.EmailClaimType {
				t.Errorf("%s: a claim event was published: key %s, %s", topic, m.Key, messageHeader(m, "ce_type"))
			}
		}
	}
}

// topicsWithPrefix lists the broker's topics whose name starts with prefix.
func topicsWithPrefix(t *testing.T, broker, prefix string) []string {
	t.Helper()
	conn, err := kafka.Dial("tcp", broker)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var out []string
	for _, p := range parts {
		if strings.HasPrefix(p.Topic, prefix) && !seen[p.Topic] {
			seen[p.Topic] = true
			out = append(out, p.Topic)
		}
	}
	return out
}

func messageHeader(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
