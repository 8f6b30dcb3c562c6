package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/segmentio/kafka-go"
	"go.yaml.in/yaml/v4"

	"github.com/orderd/orderd/internal/relay/kafkatest"
	"github.com/orderd/orderd/internal/store/disktest"
)

// Where the dashboard and the rules are, from cmd/orderd.
var (
	dashboardFile = filepath.Join("..", "..", "deploy", "grafana", "dashboards", "orderd.json")
	alertsFile    = filepath.Join("..", "..", "deploy", "prometheus", "alerts.yml")
)

// scrapeLabels are the labels Prometheus adds to every series it scrapes;
// orderd's /metrics has none of them.
var scrapeLabels = []string{"job", "instance"}

// scrapeSeries are the series Prometheus makes itself for each target.
var scrapeSeries = []string{"up"}

// TestMonitoringSeriesExist: every series selector of the Grafana dashboard
// (its panels and its variables) and of the alerting rules matches a series
// that running orderds serve at /metrics, so a misspelled metric, label or
// label value fails here rather than drawing an empty panel or an alert
// that can never fire. Some series appear only after an event, so the
// orderds are made to meet each: one relays to the real broker with order
// events over their topic's size limit (published events, dead letters),
// the other has its data dir on a file system that fills up (storage
// faults, 503 answers).
func TestMonitoringSeriesExist(t *testing.T) {
	selectors := monitoringSelectors(t)
	brokers := kafkatest.Brokers(t)

	orders := kafkatest.Topic(t, brokers, 1, kafka.ConfigEntry{ConfigName: "max.message.bytes", ConfigValue: "4096"})
	customers := kafkatest.Topic(t, brokers, 1)
	// Quotas on, far above what the test sends: their series show.
	relaying := start(t, "", kafkaEnv(t, brokers, "ORDERD_KAFKA_TOPICS", "Order="+orders+",Customer="+customers, "ORDERD_RATE_LIMIT", "10000"))
	cust := relaying.registerCustomer(t, "monitoring@example.com")
	var lines []itemBody // about 6 KB of JSON: over the topic's limit
	for range 100 {
		lines = append(lines, itemBody{uuid.NewString(), 1})
	}
	big := relaying.createOrder(t, cust.ID, lines...)
	relaying.do(t, "POST", "/v1/orders/"+big.ID.String()+"/confirm", nil, http.StatusOK)
	relaying.createOrder(t, cust.ID)
	relayed := relaying.waitRelayed(t, 60*time.Second)
	if relayed[`orderd_dead_letters{state="failed"}`] != 1 {
		t.Fatalf("want 1 failed dead letter, /metrics has %v", relayed[`orderd_dead_letters{state="failed"}`])
	}

	faulty := start(t, disktest.Mount(t, 32<<20), nil)
	register := func(i int) response {
		t.Helper()
		return faulty.call(t, "POST", "/v1/customers", map[string]any{
			"email": "fault" + strconv.Itoa(i) + "@example.com", "first_name": "Disk", "last_name": strings.Repeat("Full", 25),
		}, nil, true)
	}
	if r := register(0); r.Status != http.StatusCreated {
		t.Fatalf("register on a healthy disk: %d %s", r.Status, r.Body)
	}
	filler := disktest.Fill(t, faulty.dataDir)
	for i := 1; ; i++ { // the WAL may take a few more
		r := register(i)
		if r.Status == http.StatusServiceUnavailable {
			break
		}
		if r.Status != http.StatusCreated || i > 500 {
			t.Fatalf("command %d on a full disk: %d %s, want 503 in the end", i, r.Status, r.Body)
		}
	}
	faulted := faulty.metrics(t)
	disktest.Free(t, filler) // for a clean stop

	scraped := scrapedSeries(t, relayed, faulted)
	for _, sel := range selectors {
		if !matchesAny(sel.matchers, scraped) {
			t.Errorf("%s: no series of orderd's /metrics matches %s", sel.where, sel.text)
		}
	}
}

// selector is one series selector of the dashboard or the rules.
type selector struct {
	where    string // the panel or rule it is in
	text     string
	matchers []*labels.Matcher
}

// monitoringSelectors parses every PromQL expression of the dashboard and
// the rules into the selectors it holds.
func monitoringSelectors(t *testing.T) []selector {
	t.Helper()
	var exprs [][2]string // where, PromQL
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct {
				Name  string
				Type  string
				Query json.RawMessage
			}
		}
	}
	readInto(t, dashboardFile, func(b []byte) error { return json.Unmarshal(b, &dash) })
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, [2]string{"dashboard panel " + strconv.Quote(p.Title), tg.Expr})
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("%s: variable %s: %v", dashboardFile, v.Name, err)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Fatalf("%s: variable %s: %q is not label_values(selector, label)", dashboardFile, v.Name, q.Query)
		}
		exprs = append(exprs, [2]string{"dashboard variable " + v.Name, m[1]})
	}

	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string
				Expr  string
			}
		}
	}
	readInto(t, alertsFile, func(b []byte) error { return yaml.Unmarshal(b, &rules) })
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, [2]string{"alert " + r.Alert, r.Expr})
		}
	}
	if len(dash.Panels) == 0 || len(rules.Groups) == 0 {
		t.Fatalf("no panels in %s or no rule groups in %s", dashboardFile, alertsFile)
	}

	p := parser.NewParser(parser.Options{})
	var out []selector
	for _, e := range exprs {
		expr, err := p.ParseExpr(grafanaVariables(e[1]))
		if err != nil {
			t.Fatalf("%s: %q: %v", e[0], e[1], err)
		}
		for _, ms := range parser.ExtractSelectors(expr) {
			ms = slices.DeleteFunc(ms, func(m *labels.Matcher) bool { return slices.Contains(scrapeLabels, m.Name) })
			out = append(out, selector{where: e[0], text: matchersString(ms), matchers: ms})
		}
	}
	return out
}

// grafanaVariables replaces Grafana's variables in a query with values
// PromQL parses: a duration for the intervals, a word elsewhere (they
// only stand in job and instance matchers, which are not checked).
func grafanaVariables(q string) string {
	return regexp.MustCompile(`\$\{?(\w+)\}?`).ReplaceAllStringFunc(q, func(v string) string {
		if strings.HasPrefix(strings.Trim(v, "${}"), "__") {
			return "5m"
		}
		return "x"
	})
}

func readInto(t *testing.T, path string, decode func([]byte) error) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := decode(b); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// scrapedSeries turns scrapes (as service.metrics returns them) into label
// sets, with the series Prometheus makes itself.
func scrapedSeries(t *testing.T, scrapes ...map[string]float64) []labels.Labels {
	t.Helper()
	p := parser.NewParser(parser.Options{})
	var out []labels.Labels
	for _, name := range scrapeSeries {
		out = append(out, labels.FromStrings(labels.MetricName, name))
	}
	for _, scrape := range scrapes {
		for series := range scrape {
			ls, err := p.ParseMetric(series)
			if err != nil {
				t.Fatalf("/metrics series %q: %v", series, err)
			}
			out = append(out, ls)
		}
	}
	return out
}

func matchesAny(ms []*labels.Matcher, series []labels.Labels) bool {
	for _, ls := range series {
		if matchesAll(ms, ls) {
			return true
		}
	}
	return false
}

func matchesAll(ms []*labels.Matcher, ls labels.Labels) bool {
	for _, m := range ms {
		if !m.Matches(ls.Get(m.Name)) {
			return false
		}
	}
	return true
}

func matchersString(ms []*labels.Matcher) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.String()
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
