"""Writes mapper_cases.json: the scenarios of statsd_exporter 0.31's own pkg/mapper/mapper_test.go
(TestMetricMapperYAML and TestAction), each with the answers its real mapper gives, which
tests/unit/test_statsd_exporter_mapping.py asks of ours.

Needs Go and the module in Go's module cache (``make bench`` or ``python -m bench.peers install
statsd_exporter`` puts it there): the module is copied to a temporary directory, the two tests are
patched to record each scenario's config, whether it loads, and for each lookup the mapping's
name, labels, action, ttl and scale, and run offline. Usage: .venv/bin/python tests/data/statsd_exporter/regenerate.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

VERSION = "v0.31.0"
HERE = Path(__file__).resolve().parent

RECORD_LOOKUPS = """
	{
		var out []map[string]interface{}
		for _, sc := range scenarios {
			m := MetricMapper{}
			err := m.InitFromYAMLString(sc.config)
			rows := []map[string]interface{}{}
			for _, mp := range sc.mappings {
				if err != nil {
					break
				}
				mt := mp.metricType
				if mt == "" {
					mt = MetricTypeCounter
				}
				got, labels, present := m.GetMapping(mp.statsdMetric, mt)
				row := map[string]interface{}{"metric": mp.statsdMetric, "type": string(mt), "present": present}
				if present {
					row["name"] = got.Name
					row["labels"] = labels
					row["action"] = string(got.Action)
					row["ttl_seconds"] = got.Ttl.Seconds()
					if got.Scale.Set {
						row["scale"] = got.Scale.Val
					}
				}
				rows = append(rows, row)
			}
			out = append(out, map[string]interface{}{
				"test": "TestMetricMapperYAML/" + sc.testName, "config": sc.config,
				"refused": err != nil, "lookups": rows})
		}
		recordCases(t, "yaml", out)
	}
"""

RECORD_ACTIONS = """
	{
		var out []map[string]interface{}
		for _, sc := range scenarios {
			m := MetricMapper{}
			err := m.InitFromYAMLString(sc.config)
			row := map[string]interface{}{"test": "TestAction/" + sc.testName, "config": sc.config,
				"refused": err != nil, "lookups": []interface{}{}}
			if err == nil {
				row["action"] = string(m.Mappings[0].Action)
			}
			out = append(out, row)
		}
		recordCases(t, "action", out)
	}
"""

RECORDER = """package mapper

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func recordCases(t *testing.T, name string, v interface{}) {
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(os.Getenv("CASES_DIR"), name+".json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}
"""


def patched(source: str) -> str:
    anchor_yaml = "\tmapper := MetricMapper{}\n\tcache, _ := lru.NewMetricMapperLRUCache(mapper.Registerer, 1000)\n"
    anchor_action = "func TestAction(t *testing.T) {"
    anchor_next = "func TestMultipleMatches("
    loop = "\tfor i, scenario := range scenarios {"
    head, rest = source.split(anchor_action)
    action, tail = rest.split(anchor_next)
    if head.count(anchor_yaml) != 1 or action.count(loop) != 1:
        raise SystemExit("mapper_test.go changed: the anchors this script patches are gone")
    head = head.replace(anchor_yaml, RECORD_LOOKUPS + anchor_yaml)
    action = action.replace(loop, RECORD_ACTIONS + loop)
    return head + anchor_action + action + anchor_next + tail


def main() -> None:
    cache = subprocess.check_output(["go", "env", "GOMODCACHE"], text=True).strip()
    module = Path(cache) / "github.com" / "prometheus" / f"statsd_exporter@{VERSION}"
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "statsd_exporter"
        shutil.copytree(module, copy)
        mapper = copy / "pkg" / "mapper"
        for path in [copy, *copy.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        test = mapper / "mapper_test.go"
        test.write_text(patched(test.read_text()))
        (mapper / "record_test.go").write_text(RECORDER)
        env = dict(os.environ, CASES_DIR=tmp, GOFLAGS="-mod=mod", GOPROXY="off", GOWORK="off")
        subprocess.run(["go", "test", "-count=1", "-run", "^(TestMetricMapperYAML|TestAction)$", "./pkg/mapper/"],
                       cwd=copy, env=env, check=True, stdout=sys.stderr)
        cases = [case for name in ("yaml", "action") for case in json.loads((Path(tmp) / f"{name}.json").read_text())]
    out = {"source": f"github.com/prometheus/statsd_exporter@{VERSION} pkg/mapper/mapper_test.go", "cases": cases}
    (HERE / "mapper_cases.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"{len(cases)} cases written to {HERE / 'mapper_cases.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
