package relay

import (
	"strconv"
	"strings"
	"time"

	"github.com/orderd/orderd/internal/store"
)

// Topics names the topic of each aggregate type: an explicit entry, or
// Prefix + the type in lower case + "-events" (order-events,
// customer-events).
type Topics struct {
	Prefix string
	ByType map[string]string
}

// For returns the topic of aggregateType's events.
func (t Topics) For(aggregateType string) string {
	if topic, ok := t.ByType[aggregateType]; ok {
		return topic
	}
	return t.Prefix + strings.ToLower(aggregateType) + "-events"
}

// All returns the topics of the given aggregate types, each once.
func (t Topics) All(aggregateTypes ...string) []string {
	seen := map[string]bool{}
	var out []string
	for _, at := range aggregateTypes {
		if topic := t.For(at); !seen[topic] {
			seen[topic] = true
			out = append(out, topic)
		}
	}
	return out
}

// message encodes an event as a CloudEvents 1.0 binary-mode Kafka record:
// the value is the event's data, the attributes are ce_ headers, and the
// key is the aggregate id, so that Kafka keeps an aggregate's events on one
// partition, in order. Consumers dedupe on ce_id: delivery is at least once.
// The event's stored trace context follows as traceparent and tracestate
// (see traceHeaders).
func (r *Relay) message(e store.Event) Message {
	h := func(k, v string) Header { return Header{Key: k, Value: []byte(v)} }
	m := Message{
		Topic: r.cfg.Topics.For(e.AggregateType),
		Key:   []byte(e.AggregateID.String()),
		Value: e.Data,
		Time:  e.Timestamp,
		Headers: []Header{
			h("ce_specversion", "1.0"),
			h("ce_id", e.ID.String()),
			h("ce_source", r.cfg.Source),
			h("ce_type", e.Type),
			h("ce_time", e.Timestamp.UTC().Format(time.RFC3339Nano)),
			h("ce_subject", e.AggregateID.String()),
			h("content-type", "application/json"),
			// CloudEvents extension attributes (lower-case alphanumerics).
			h("ce_aggregatetype", e.AggregateType),
			h("ce_sequence", strconv.FormatInt(e.Sequence, 10)),
			h("ce_schemaversion", strconv.Itoa(e.SchemaVersion)),
			h("ce_correlationid", e.CorrelationID.String()),
			h("ce_causationid", e.CausationID.String()),
		},
	}
	if subject := e.Metadata[PIISubjectMeta]; subject != "" {
		// The value's personal fields are encrypted with this subject's
		// data key (GET /v1/keys/{subject}; docs/events.md).
		m.Headers = append(m.Headers, h("ce_piisubject", subject))
	}
	m.Headers = append(m.Headers, traceHeaders(e)...)
	return m
}

// PIISubjectMeta is the envelope metadata entry naming the subject whose
// data key encrypted an event's personal fields (aggregate.MetaSubject),
// published as the ce_piisubject header.
const PIISubjectMeta = "pii_subject"
