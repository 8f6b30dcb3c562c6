#!/usr/bin/env bash
# Checks the monitoring that ships in deploy/, and exits non-zero when any
# of it is invalid:
#   - deploy/prometheus/prometheus.yml with promtool check config (which
#     also loads the rule files it names, relative to it);
#   - deploy/prometheus/alerts.yml with promtool check rules, and its unit
#     tests, alerts_test.yml, with promtool test rules (each alert fires on
#     a synthetic failure and stays silent when healthy);
#   - the Grafana dashboard parses, every panel queries ${datasource}, and
#     the provisioning files parse (when PyYAML is there).
# promtool is Debian's prometheus package (scripts/deps.sh installs it).
# That every series they name exists in a running orderd's /metrics is
# TestMonitoringSeriesExist in cmd/orderd, part of `make unit`.
set -euo pipefail

cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
	echo "check-monitoring: no promtool; scripts/deps.sh installs it (Debian's prometheus package)" >&2
	exit 2
fi

(
	cd deploy/prometheus
	promtool check config prometheus.yml
	promtool check rules alerts.yml
	promtool test rules alerts_test.yml
)

for f in deploy/grafana/dashboards/*.json; do
	python3 -m json.tool "$f" >/dev/null || {
		echo "check-monitoring: $f is not valid JSON" >&2
		exit 1
	}
done
python3 - deploy/grafana/dashboards/*.json <<'PY'
import json, sys
for path in sys.argv[1:]:
    d = json.load(open(path))
    problems = []
    if not d.get("uid") or not d.get("title"):
        problems.append("no uid or title")
    names = [v.get("name") for v in d.get("templating", {}).get("list", [])]
    if "datasource" not in names:
        problems.append("no datasource variable")
    for p in d.get("panels", []):
        if p.get("type") == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problems.append("panel %r does not use ${datasource}" % p.get("title"))
        if not p.get("targets"):
            problems.append("panel %r has no query" % p.get("title"))
    ids = [p["id"] for p in d.get("panels", [])]
    if len(ids) != len(set(ids)):
        problems.append("panel ids repeat")
    for m in problems:
        print("check-monitoring: %s: %s" % (path, m), file=sys.stderr)
    if problems:
        sys.exit(1)
PY
if python3 -c 'import yaml' 2>/dev/null; then
	for f in deploy/grafana/provisioning/*/*.yaml; do
		python3 -c 'import sys, yaml; yaml.safe_load(open(sys.argv[1]))' "$f" || {
			echo "check-monitoring: $f is not valid YAML" >&2
			exit 1
		}
	done
else
	echo "check-monitoring: no PyYAML here; Grafana's provisioning files not parsed" >&2
fi
echo "check-monitoring: prometheus config, rules, rule tests and the dashboard are valid" >&2
