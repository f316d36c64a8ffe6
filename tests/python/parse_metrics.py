"""Parses Prometheus text exposition from stdin with prometheus_client's parser and prints
every sample as JSON ([name, labels, value] per line), so Rust tests check what a real scraper
reads. A page the parser refuses exits non-zero with its error."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        samples.append([sample.name, sample.labels, sample.value])
json.dump({"samples": samples}, sys.stdout)
