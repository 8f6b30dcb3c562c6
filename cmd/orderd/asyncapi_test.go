package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/segmentio/kafka-go"
	"go.yaml.in/yaml/v4"

	"github.com/orderd/orderd"
	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/relay"
)

// asyncAPIDoc is asyncapi.yaml with the schemas of each channel's messages
// compiled, so that records read back from Kafka can be checked against it.
type asyncAPIDoc struct {
	doc      map[string]any
	channels map[string]*asyncChannel // by address, its parameters at their defaults
}

// asyncChannel is one topic of the document.
type asyncChannel struct {
	id       string
	messages map[string]*asyncMessage // by key, "<ce_type>.v<ce_schemaversion>"
}

// asyncMessage holds the compiled schemas of one message.
type asyncMessage struct {
	name                  string
	headers, key, payload *jsonschema.Schema
}

const asyncAPIURL = "file:///orderd/asyncapi.yaml"

// loadAsyncAPI parses and compiles the embedded document once per test
// binary: every record of every relay test is checked against it.
var loadAsyncAPI = sync.OnceValues(func() (*asyncAPIDoc, error) {
	var raw any
	if err := yaml.Unmarshal(orderd.AsyncAPI, &raw); err != nil {
		return nil, fmt.Errorf("asyncapi.yaml: %w", err)
	}
	// Through JSON, so that numbers are json.Number and maps
	// map[string]any, as the validator wants them.
	js, err := json.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("asyncapi.yaml: %w", err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		return nil, fmt.Errorf("asyncapi.yaml: %w", err)
	}
	doc, ok := v.(map[string]any)
	if !ok || doc["asyncapi"] != "3.0.0" {
		return nil, errors.New("asyncapi.yaml is not an AsyncAPI 3.0.0 document")
	}
	d := &asyncAPIDoc{doc: doc, channels: map[string]*asyncChannel{}}

	// AsyncAPI's default schema format is a superset of JSON Schema
	// draft 7. Formats (uuid, date-time) are asserted too.
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7)
	c.AssertFormat()
	if err := c.AddResource(asyncAPIURL, doc); err != nil {
		return nil, err
	}
	compile := func(ptr string) (*jsonschema.Schema, error) {
		ptr, _, err := d.locate(ptr)
		if err != nil {
			return nil, err
		}
		return c.Compile(asyncAPIURL + "#" + ptr)
	}

	channels, _ := doc["channels"].(map[string]any)
	for id := range channels {
		_, node, err := d.locate("/channels/" + id)
		if err != nil {
			return nil, err
		}
		ch := &asyncChannel{id: id, messages: map[string]*asyncMessage{}}
		addr, err := d.address(id, nil)
		if err != nil {
			return nil, err
		}
		msgs, _ := node.(map[string]any)["messages"].(map[string]any)
		for key := range msgs {
			ptr, node, err := d.locate("/channels/" + id + "/messages/" + key)
			if err != nil {
				return nil, err
			}
			m := &asyncMessage{}
			m.name, _ = node.(map[string]any)["name"].(string)
			if m.headers, err = compile(ptr + "/headers"); err != nil {
				return nil, fmt.Errorf("message %s headers: %w", key, err)
			}
			if m.payload, err = compile(ptr + "/payload"); err != nil {
				return nil, fmt.Errorf("message %s payload: %w", key, err)
			}
			if m.key, err = compile(ptr + "/bindings/kafka/key"); err != nil {
				return nil, fmt.Errorf("message %s key: %w", key, err)
			}
			ch.messages[key] = m
		}
		d.channels[addr] = ch
	}
	return d, nil
})

// asyncAPI returns the compiled document, or fails the test.
func asyncAPI(t testing.TB) *asyncAPIDoc {
	t.Helper()
	d, err := loadAsyncAPI()
	if err != nil {
		t.Fatalf("asyncapi.yaml: %v", err)
	}
	return d
}

// locate walks the JSON pointer ptr through the document, following local
// $refs on the way and at the end, and returns where it lands (a pointer
// with no $ref on its path) and the node there.
func (d *asyncAPIDoc) locate(ptr string) (string, any, error) {
	var node any = d.doc
	at := ""
	tokens := strings.Split(strings.TrimPrefix(ptr, "/"), "/")
	for hops := 0; ; hops++ {
		if hops > 32 {
			return "", nil, fmt.Errorf("asyncapi.yaml: $ref loop at %s", ptr)
		}
		if m, ok := node.(map[string]any); ok {
			if ref, ok := m["$ref"].(string); ok {
				if !strings.HasPrefix(ref, "#/") {
					return "", nil, fmt.Errorf("asyncapi.yaml: %s: only local $refs are supported, not %q", at, ref)
				}
				rest := tokens
				node, at, tokens = d.doc, "", append(strings.Split(ref[2:], "/"), rest...)
				continue
			}
		}
		if len(tokens) == 0 || (len(tokens) == 1 && tokens[0] == "") {
			return at, node, nil
		}
		tok := strings.NewReplacer("~1", "/", "~0", "~").Replace(tokens[0])
		m, ok := node.(map[string]any)
		if !ok {
			return "", nil, fmt.Errorf("asyncapi.yaml: %s is not an object (looking for %s)", at, ptr)
		}
		if node, ok = m[tok]; !ok {
			return "", nil, fmt.Errorf("asyncapi.yaml: %s has no %q (looking for %s)", at, tok, ptr)
		}
		at += "/" + tokens[0]
		tokens = tokens[1:]
	}
}

// address returns the address of channel id with its parameters set from
// params, or to their defaults.
func (d *asyncAPIDoc) address(id string, params map[string]string) (string, error) {
	_, node, err := d.locate("/channels/" + id)
	if err != nil {
		return "", err
	}
	ch := node.(map[string]any)
	addr, _ := ch["address"].(string)
	declared, _ := ch["parameters"].(map[string]any)
	for name := range declared {
		_, p, err := d.locate("/channels/" + id + "/parameters/" + name)
		if err != nil {
			return "", err
		}
		value, ok := params[name]
		if !ok {
			if value, ok = p.(map[string]any)["default"].(string); !ok {
				return "", fmt.Errorf("channel %s: parameter %s has no default", id, name)
			}
		}
		addr = strings.ReplaceAll(addr, "{"+name+"}", value)
	}
	if strings.ContainsAny(addr, "{}") {
		return "", fmt.Errorf("channel %s: address %q has undeclared parameters", id, addr)
	}
	return addr, nil
}

// check validates one record against the message: its key, headers and
// value. Beyond what JSON Schema says, the key must be ce_subject.
func (m *asyncMessage) check(key []byte, headers map[string]string, value []byte) error {
	var errs []error
	if err := m.key.Validate(string(key)); err != nil {
		errs = append(errs, fmt.Errorf("key: %w", err))
	}
	if string(key) != headers["ce_subject"] {
		errs = append(errs, fmt.Errorf("key %q is not ce_subject %q", key, headers["ce_subject"]))
	}
	h := make(map[string]any, len(headers))
	for k, v := range headers {
		h[k] = v
	}
	if err := m.headers.Validate(h); err != nil {
		errs = append(errs, fmt.Errorf("headers: %w", err))
	}
	payload, err := jsonschema.UnmarshalJSON(bytes.NewReader(value))
	if err != nil {
		errs = append(errs, fmt.Errorf("payload is not JSON: %w", err))
	} else if err := m.payload.Validate(payload); err != nil {
		errs = append(errs, fmt.Errorf("payload: %w", err))
	}
	return errors.Join(errs...)
}

// message picks the message of a record by its headers, as a consumer
// would: channel by the topic's default name (order-events or
// customer-events; tests add prefixes and overrides, which the document
// describes as the prefix parameter and ORDERD_KAFKA_TOPICS), message by
// ce_type and ce_schemaversion.
func (d *asyncAPIDoc) message(topic string, headers map[string]string) (*asyncMessage, error) {
	ch, ok := d.channels[topic]
	if !ok {
		return nil, fmt.Errorf("asyncapi.yaml has no channel for topic %s", topic)
	}
	key := headers["ce_type"] + ".v" + headers["ce_schemaversion"]
	m, ok := ch.messages[key]
	if !ok {
		return nil, fmt.Errorf("asyncapi.yaml has no message %s on channel %s", key, ch.id)
	}
	return m, nil
}

// checkRecord fails the test unless a record read from the topic whose
// default name is topic conforms to asyncapi.yaml: key, headers and value.
func checkRecord(t testing.TB, topic string, key []byte, headers map[string]string, value []byte) {
	t.Helper()
	m, err := asyncAPI(t).message(topic, headers)
	if err == nil {
		err = m.check(key, headers, value)
	}
	if err != nil {
		t.Errorf("record on %s (key %s, ce_id %s) breaks asyncapi.yaml: %v\nheaders %v\nvalue %s",
			topic, key, headers["ce_id"], err, headers, value)
	}
}

// checkMessages checks every kafka-go message read from the topic whose
// default name is topic. A header given twice fails: the document allows
// each once.
func checkMessages(t testing.TB, topic string, msgs []kafka.Message) {
	t.Helper()
	for _, m := range msgs {
		headers := map[string]string{}
		for _, h := range m.Headers {
			if _, dup := headers[h.Key]; dup {
				t.Errorf("record on %s partition %d offset %d: header %s twice", m.Topic, m.Partition, m.Offset, h.Key)
			}
			headers[h.Key] = string(h.Value)
		}
		checkRecord(t, topic, m.Key, headers, m.Value)
	}
	t.Logf("asyncapi.yaml: checked %d records of %s", len(msgs), topic)
}

// checkKcat checks every record kcat read from the topic whose default name
// is topic.
func checkKcat(t testing.TB, topic string, recs []kcatRecord) {
	t.Helper()
	for _, r := range recs {
		headers := map[string]string{}
		for i := 0; i+1 < len(r.Headers); i += 2 {
			if _, dup := headers[r.Headers[i]]; dup {
				t.Errorf("record on %s partition %d offset %d: header %s twice", topic, r.Partition, r.Offset, r.Headers[i])
			}
			headers[r.Headers[i]] = r.Headers[i+1]
		}
		checkRecord(t, topic, []byte(r.Key), headers, []byte(r.Payload))
	}
	t.Logf("asyncapi.yaml: checked %d records of %s (kcat)", len(recs), topic)
}

// TestAsyncAPIDocument: asyncapi.yaml parses, its schemas compile, and its
// channels are the relay's topics, default names and prefix alike.
func TestAsyncAPIDocument(t *testing.T) {
	d := asyncAPI(t)
	types := aggregate.PublishedTypes()
	if len(d.channels) != len(types) {
		t.Errorf("asyncapi.yaml has channels %v, want one per aggregate type %v", slices.Sorted(maps.Keys(d.channels)), types)
	}
	for _, at := range types {
		ch, ok := d.channels[relay.Topics{}.For(at)]
		if !ok {
			t.Errorf("asyncapi.yaml has no channel at %s, the topic of %s events", relay.Topics{}.For(at), at)
			continue
		}
		got, err := d.address(ch.id, map[string]string{"prefix": "staging-"})
		if want := (relay.Topics{Prefix: "staging-"}).For(at); err != nil || got != want {
			t.Errorf("channel %s with prefix staging-: address %q (%v), the relay uses %q", ch.id, got, err, want)
		}
		for key, m := range ch.messages {
			if !strings.HasPrefix(key, m.name+".v") {
				t.Errorf("channel %s: message %s is named %q: want keys <name>.v<schema version>", ch.id, key, m.name)
			}
		}
	}
}

// eventTypes returns the event types that internal/aggregate defines, each
// with its aggregate type, read from the package's source: the
// `EventType() string { return "…" }` of each event, and the type switch in
// the apply method of the aggregate that applies it (an aggregate's Go type
// is named as its aggregate type: Order, Customer, EmailClaim). Reading the
// source rather than a list kept here is what makes a new event type
// without a message fail TestAsyncAPIEveryEventType.
func eventTypes(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob("../../internal/aggregate/*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	names := map[string]string{}     // Go type → event type
	appliedBy := map[string]string{} // Go type → aggregate type
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Recv == nil || len(fn.Recv.List) != 1 || fn.Body == nil {
				continue
			}
			recv := fn.Recv.List[0].Type
			if star, ok := recv.(*ast.StarExpr); ok {
				recv = star.X
			}
			recvName := fmt.Sprint(recv)
			switch fn.Name.Name {
			case "EventType":
				var lit *ast.BasicLit
				if len(fn.Body.List) == 1 {
					if ret, ok := fn.Body.List[0].(*ast.ReturnStmt); ok && len(ret.Results) == 1 {
						lit, _ = ret.Results[0].(*ast.BasicLit)
					}
				}
				if lit == nil || lit.Kind != token.STRING {
					t.Fatalf("%s: EventType does not return a string literal; teach eventTypes to read it", fset.Position(fn.Pos()))
				}
				names[recvName], _ = strconv.Unquote(lit.Value)
			case "apply":
				ast.Inspect(fn.Body, func(n ast.Node) bool {
					if cc, ok := n.(*ast.CaseClause); ok {
						for _, e := range cc.List {
							if other, dup := appliedBy[fmt.Sprint(e)]; dup && other != recvName {
								t.Errorf("%s is applied by %s and %s", e, other, recvName)
							}
							appliedBy[fmt.Sprint(e)] = recvName
						}
					}
					return true
				})
			}
		}
	}
	if len(names) == 0 {
		t.Fatal("found no EventType methods in internal/aggregate")
	}
	types := map[string]string{}
	for goType, et := range names {
		at, ok := appliedBy[goType]
		if !ok {
			t.Fatalf("no aggregate's apply has a case for %s; teach eventTypes where it belongs", goType)
		}
		types[et] = at
	}
	return types
}

// published returns the event types of aggregate types the relay publishes.
func published(t *testing.T) []string {
	t.Helper()
	var out []string
	for et, at := range eventTypes(t) {
		if slices.Contains(aggregate.PublishedTypes(), at) {
			out = append(out, et)
		}
	}
	slices.Sort(out)
	return out
}

// TestAsyncAPIEveryEventType: every event type of a published aggregate type
// has a message at its current schema version, on its aggregate type's
// channel, and every message is such an event type at that version: no
// event is published without a schema, and no schema describes what is
// never published (older versions are upcast before the relay sees them;
// email claims are not published).
func TestAsyncAPIEveryEventType(t *testing.T) {
	d := asyncAPI(t)
	documented := map[string]string{} // message key → channel address
	for addr, ch := range d.channels {
		for key := range ch.messages {
			if other, dup := documented[key]; dup {
				t.Errorf("message %s is on channels %s and %s", key, other, addr)
			}
			documented[key] = addr
		}
	}
	defined := map[string]bool{}
	for et, at := range eventTypes(t) {
		if !slices.Contains(aggregate.PublishedTypes(), at) {
			continue
		}
		key := fmt.Sprintf("%s.v%d", et, aggregate.SchemaVersion(et))
		defined[key] = true
		if addr, ok := documented[key]; !ok {
			t.Errorf("%s event type %s (schema v%d) has no message %s in asyncapi.yaml", at, et, aggregate.SchemaVersion(et), key)
		} else if want := (relay.Topics{}).For(at); addr != want {
			t.Errorf("message %s is on channel %s, want %s (the topic of %s events)", key, addr, want, at)
		}
	}
	for key, addr := range documented {
		if !defined[key] {
			t.Errorf("channel %s: message %s is no published event type of internal/aggregate at its current schema version", addr, key)
		}
	}
}

// recordOf is a record as the relay would publish e on a topic of
// aggregateType: the key and headers of a first event, and e's JSON.
func recordOf(t *testing.T, aggregateType string, e aggregate.Event) (key []byte, headers map[string]string, value []byte) {
	t.Helper()
	id := uuid.Must(uuid.NewV7()).String()
	value, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(id), map[string]string{
		"ce_specversion":   "1.0",
		"ce_id":            uuid.Must(uuid.NewV7()).String(),
		"ce_source":        "orderd",
		"ce_type":          e.EventType(),
		"ce_time":          time.Date(2026, 11, 25, 22, 57, 35, 552408874, time.UTC).Format(time.RFC3339Nano),
		"ce_subject":       id,
		"content-type":     "application/json",
		"ce_aggregatetype": aggregateType,
		"ce_sequence":      "1",
		"ce_schemaversion": strconv.Itoa(aggregate.SchemaVersion(e.EventType())),
		"ce_correlationid": uuid.Must(uuid.NewV7()).String(),
		"ce_causationid":   uuid.Must(uuid.NewV7()).String(),
		"traceparent":      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}, value
}

// TestAsyncAPIPayloads: each event type's Go struct, marshalled as the
// handler stores it (optional fields set and not), conforms to its message,
// and a mutated copy of each does not: the schemas are strict enough to
// notice drift. The relay tests check the real records end to end.
// sealedExample stands for the base64 of an encrypted personal field.
const sealedExample = "c2VhbGVkIGJ5dGVzIG9mIGEgcGVyc29uYWwgZmllbGQ"

func TestAsyncAPIPayloads(t *testing.T) {
	d := asyncAPI(t)
	at := time.Date(2026, 11, 25, 22, 57, 35, 552408874, time.UTC)
	items := []aggregate.Item{{ProductID: uuid.New(), Quantity: 2}, {ProductID: uuid.New(), Quantity: 10000}}
	events := []struct {
		aggregateType string
		event         aggregate.Event
	}{
		{aggregate.OrderType, aggregate.OrderCreated{CustomerID: uuid.New(), Items: items, CreatedAt: at}},
		{aggregate.OrderType, aggregate.OrderItemsUpdated{Items: items[:1], UpdatedAt: at}},
		{aggregate.OrderType, aggregate.OrderConfirmed{ConfirmedAt: at}},
		{aggregate.OrderType, aggregate.OrderShipped{TrackingNumber: "T-1", Carrier: "DHL", ShippedAt: at}},
		{aggregate.OrderType, aggregate.OrderDelivered{Signature: "J. Doe", DeliveredAt: at}},
		{aggregate.OrderType, aggregate.OrderDelivered{DeliveredAt: at}},
		{aggregate.OrderType, aggregate.OrderCancelled{Reason: "ordered twice", CancelledAt: at}},
		{aggregate.OrderType, aggregate.OrderCancelled{CancelledAt: at}},
		{aggregate.CustomerType, aggregate.CustomerRegistered{Email: "ada@example.com", FirstName: "Ada", LastName: "Lovelace", Phone: "+14155552671", RegisteredAt: at}},
		{aggregate.CustomerType, aggregate.CustomerRegistered{Email: "ada@exämple.com", FirstName: "Ada", LastName: "Lovelace", RegisteredAt: at}},
		{aggregate.CustomerType, aggregate.CustomerEmailChanged{Email: "ada@example.org", ChangedAt: at}},
		{aggregate.CustomerType, aggregate.CustomerPhoneChanged{Phone: "+442071838750", ChangedAt: at}},
		{aggregate.CustomerType, aggregate.CustomerErased{ErasedAt: at}},
		// As orderd publishes them: the personal fields encrypted.
		{aggregate.CustomerType, aggregate.CustomerRegistered{Email: "pii1:" + sealedExample, FirstName: "pii1:" + sealedExample,
			LastName: "pii1:" + sealedExample, Phone: "pii1:" + sealedExample, RegisteredAt: at}},
		{aggregate.OrderType, aggregate.OrderDelivered{Signature: "pii1:" + sealedExample, DeliveredAt: at}},
	}
	covered := map[string]bool{}
	for _, c := range events {
		covered[c.event.EventType()] = true
	}
	for _, et := range published(t) {
		if !covered[et] {
			t.Errorf("event type %s has no case in TestAsyncAPIPayloads", et)
		}
	}

	for i, c := range events {
		topic := relay.Topics{}.For(c.aggregateType)
		t.Run(fmt.Sprintf("%d-%s", i, c.event.EventType()), func(t *testing.T) {
			key, headers, value := recordOf(t, c.aggregateType, c.event)
			m, err := d.message(topic, headers)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.check(key, headers, value); err != nil {
				t.Fatalf("%s: %v", value, err)
			}

			// Drift: each mutation alone must fail.
			var fields map[string]any
			if err := json.Unmarshal(value, &fields); err != nil {
				t.Fatal(err)
			}
			var timeField string // every event has one: *_at
			for k := range fields {
				if strings.HasSuffix(k, "_at") {
					timeField = k
				}
			}
			other := map[string]string{aggregate.OrderType: aggregate.CustomerType, aggregate.CustomerType: aggregate.OrderType}
			missing := maps.Clone(headers)
			delete(missing, "ce_causationid")
			for _, mut := range []struct {
				name    string
				key     []byte
				headers map[string]string
				value   []byte
				want    string // in the error
			}{
				{"an unknown payload field", key, headers, with(t, fields, "coupon", "SAVE10"), "'coupon' not allowed"},
				{"a time that is not RFC 3339", key, headers, with(t, fields, timeField, "25/11/2026 22:57"), "/" + timeField},
				{"a required field missing", key, headers, with(t, fields, timeField, nil), "missing property '" + timeField + "'"},
				{"a payload that is no object", key, headers, []byte(`[]`), "want object"},
				{"a payload that is no JSON", key, headers, []byte(`{"confirmed_at":`), "payload is not JSON"},
				{"ce_sequence not a decimal", key, withHeader(headers, "ce_sequence", "01"), value, "/ce_sequence"},
				{"ce_id not a UUID", key, withHeader(headers, "ce_id", "42"), value, "/ce_id"},
				{"ce_time not in UTC", key, withHeader(headers, "ce_time", at.In(time.FixedZone("CET", 3600)).Format(time.RFC3339)), value, "/ce_time"},
				{"content-type not JSON", key, withHeader(headers, "content-type", "text/plain"), value, "/content-type"},
				{"another schema version", key, withHeader(headers, "ce_schemaversion", "99"), value, "/ce_schemaversion"},
				{"a traceparent that is not W3C", key, withHeader(headers, "traceparent", "4bf92f35-00f067aa"), value, "/traceparent"},
				{"an unknown header", key, withHeader(headers, "ce_tenant", "acme"), value, "'ce_tenant' not allowed"},
				{"a header missing", key, missing, value, "missing property 'ce_causationid'"},
				{"another aggregate type", key, withHeader(headers, "ce_aggregatetype", other[c.aggregateType]), value, "/ce_aggregatetype"},
				{"a key that is not ce_subject", []byte(uuid.NewString()), headers, value, "is not ce_subject"},
				{"a key that is not a UUID", []byte("order-1"), withHeader(headers, "ce_subject", "order-1"), value, "key:"},
			} {
				err := m.check(mut.key, mut.headers, mut.value)
				if err == nil || !strings.Contains(err.Error(), mut.want) {
					t.Errorf("%s: got %v, want an error about %q", mut.name, err, mut.want)
				}
			}
		})
	}

	// Mutations that only some payloads can have.
	shipped, _ := json.Marshal(aggregate.OrderShipped{TrackingNumber: "T-1", Carrier: "DHL", ShippedAt: at})
	created, _ := json.Marshal(aggregate.OrderCreated{CustomerID: uuid.New(), Items: items, CreatedAt: at})
	registered, _ := json.Marshal(aggregate.CustomerRegistered{Email: "ada@example.com", FirstName: "Ada", LastName: "Lovelace", RegisteredAt: at})
	for _, c := range []struct {
		name, eventType, json, field string
		value                        any
	}{
		{"an empty carrier", "OrderShipped", string(shipped), "carrier", ""},
		{"a tracking number of 101 characters", "OrderShipped", string(shipped), "tracking_number", strings.Repeat("x", 101)},
		{"a quantity of 0", "OrderCreated", string(created), "items", []any{map[string]any{"product_id": uuid.NewString(), "quantity": 0}}},
		{"a fractional quantity", "OrderCreated", string(created), "items", []any{map[string]any{"product_id": uuid.NewString(), "quantity": 1.5}}},
		{"an item with a stray field", "OrderCreated", string(created), "items", []any{map[string]any{"product_id": uuid.NewString(), "quantity": 1, "price": 3}}},
		{"no items", "OrderCreated", string(created), "items", []any{}},
		{"the nil customer id", "OrderCreated", string(created), "customer_id", uuid.Nil.String()},
		{"an upper-case customer id", "OrderCreated", string(created), "customer_id", strings.ToUpper(uuid.NewString())},
		{"a phone that is not E.164", "CustomerRegistered", string(registered), "phone", "0207 183 8750"},
		{"an email without a domain", "CustomerRegistered", string(registered), "email", "ada"},
	} {
		var fields map[string]any
		if err := json.Unmarshal([]byte(c.json), &fields); err != nil {
			t.Fatal(err)
		}
		aggType := aggregate.OrderType
		if strings.HasPrefix(c.eventType, "Customer") {
			aggType = aggregate.CustomerType
		}
		m, err := d.message(relay.Topics{}.For(aggType), map[string]string{"ce_type": c.eventType, "ce_schemaversion": strconv.Itoa(aggregate.SchemaVersion(c.eventType))})
		if err != nil {
			t.Fatal(err)
		}
		v, _ := jsonschema.UnmarshalJSON(bytes.NewReader(with(t, fields, c.field, c.value)))
		if err := m.payload.Validate(v); err == nil || !strings.Contains(err.Error(), "'/"+c.field) {
			t.Errorf("%s with %s: got %v, want an error at /%s", c.eventType, c.name, err, c.field)
		}
	}
}

// with returns fields as JSON with field set to value, or removed when
// value is nil. fields is not changed.
func with(t *testing.T, fields map[string]any, field string, value any) []byte {
	t.Helper()
	c := maps.Clone(fields)
	if value == nil {
		delete(c, field)
	} else {
		c[field] = value
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withHeader returns a copy of headers with name set to value.
func withHeader(headers map[string]string, name, value string) map[string]string {
	c := maps.Clone(headers)
	c[name] = value
	return c
}

// TestAsyncAPIExamples: the examples in asyncapi.yaml conform to their own
// messages, so that a consumer copying one gets a valid record.
func TestAsyncAPIExamples(t *testing.T) {
	d := asyncAPI(t)
	n := 0
	for _, ch := range d.channels {
		for key, m := range ch.messages {
			ptr, node, err := d.locate("/channels/" + ch.id + "/messages/" + key)
			if err != nil {
				t.Fatal(err)
			}
			examples, _ := node.(map[string]any)["examples"].([]any)
			if len(examples) == 0 {
				t.Errorf("%s has no example", ptr)
			}
			for i, ex := range examples {
				ex := ex.(map[string]any)
				n++
				if h, ok := ex["headers"]; ok {
					if err := m.headers.Validate(h); err != nil {
						t.Errorf("%s/examples/%d headers: %v", ptr, i, err)
					}
				}
				if p, ok := ex["payload"]; ok {
					if err := m.payload.Validate(p); err != nil {
						t.Errorf("%s/examples/%d payload: %v", ptr, i, err)
					}
				}
			}
		}
	}
	t.Logf("%d examples checked", n)
}
