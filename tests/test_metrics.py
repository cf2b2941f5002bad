"""GET /metrics on both servers (README "Monitoring"), scraped under load and parsed with prometheus_client's parser.

A running camera (``test_camera``, 20 Hz) and pipeline instances read it; the counters must grow between two
scrapes, the histograms must be filled by the instances (through shared memory), drops must appear under their
reason, and REST requests are counted by route template and status.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from cam_server.common.histograms import InstanceHistograms
from cam_server.common.process import STAT_FIELDS
from tests.helpers.procs import wait_until

SLOW_FUNCTION = """
import time

def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    time.sleep(0.25)
    return {"pid": pulse_id}
"""


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of ``url``/metrics: name → [(labels, value)]."""
    answer = requests.get(f"{url}/metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict[str, Any], name: str, **labels: str) -> float | None:
    """The one sample of ``name`` whose labels include ``labels`` (None when there is none)."""
    found = [v for lbl, v in samples.get(name, []) if all(lbl.get(k) == x for k, x in labels.items())]
    assert len(found) <= 1, f"{name} {labels}: {found}"
    return found[0] if found else None


def test_both_servers_export_instances_under_load(servers, client):
    instance_id, _ = client.create_instance_from_config({"camera_name": "test_camera"})
    client.get_instance_message(instance_id, timeout=30)
    cam, pipe = servers.camera.url, servers.pipeline.url
    first_cam, first_pipe = scrape(cam), scrape(pipe)
    time.sleep(1.5)
    second_cam, second_pipe = scrape(cam), scrape(pipe)

    camera = {"server": "camera", "instance_id": "test_camera", "camera": "test_camera"}
    pipeline = {"server": "pipeline", "instance_id": instance_id, "camera": "test_camera",
                "pipeline_type": "processing"}
    for first, second, labels in ((first_cam, second_cam, camera), (first_pipe, second_pipe, pipeline)):
        for counter in ("cam_server_instance_frames_received_total", "cam_server_instance_frames_sent_total",
                        "cam_server_instance_bytes_sent_total"):
            before, after = value(first, counter, **labels), value(second, counter, **labels)
            assert before is not None and after is not None and after > before, (counter, labels, before, after)
        # CPU time moves in clock ticks (10 ms): a small camera can use less than a tick in 1.5 s (CI: 0.03 → 0.03).
        before, after = (value(s, "cam_server_instance_cpu_seconds_total", **labels) for s in (first, second))
        assert before is not None and after is not None and 0 < before <= after, (labels, before, after)
        assert value(second, "cam_server_instance_memory_rss_bytes", **labels) > 10e6
        assert value(second, "cam_server_instance_clients", **labels) >= (1 if labels is camera else 0)
        assert value(second, "cam_server_instance_processing_errors_total", **labels) == 0
        # Earlier tests on the shared servers may have ended runs of the same id: only no new ones meanwhile.
        assert value(second, "cam_server_instance_restarts", **labels) == value(first, "cam_server_instance_restarts",
                                                                                **labels)
        assert value(second, "cam_server_instance_dropped_total", reason="other", **labels) is not None
        # the end-to-end latency histogram is filled by the instance (shared memory), one bucket per frame
        count = value(second, "cam_server_instance_latency_seconds_count", **labels)
        assert count > value(first, "cam_server_instance_latency_seconds_count", **labels)
        assert value(second, "cam_server_instance_latency_seconds_bucket", le="+Inf", **labels) == count
        assert 0 < value(second, "cam_server_instance_latency_seconds_sum", **labels) / count < 1.0
        by_state = [v for lbl, v in second["cam_server_instances"] if lbl["server"] == labels["server"]]
        assert len(by_state) >= 6 and sum(by_state) >= 1  # every state has its series
    assert value(second_cam, "cam_server_instances", server="camera", state="streaming") >= 1
    # processing time: pipeline instances only
    count = value(second_pipe, "cam_server_instance_processing_seconds_count", **pipeline)
    assert count > value(first_pipe, "cam_server_instance_processing_seconds_count", **pipeline)
    assert value(second_cam, "cam_server_instance_processing_seconds_count", **camera) == 0
    # the server processes themselves
    assert value(second_pipe, "process_resident_memory_bytes") > 0


def test_rest_requests_by_route_template_and_status(servers, client):
    instance_id, _ = client.create_instance_from_config({"camera_name": "test_camera"})
    url = servers.pipeline.url
    route = "/api/v1/pipeline/instance/{instance_id}/info"
    labels = {"server": "pipeline", "route": route, "method": "GET"}
    before = scrape(url)
    for _ in range(3):
        assert requests.get(f"{url}/api/v1/pipeline/instance/{instance_id}/info", timeout=10).status_code == 200
    assert requests.get(f"{url}/api/v1/pipeline/instance/no-such-instance/info", timeout=10).status_code == 404
    assert requests.get(f"{url}/no/such/route", timeout=10).status_code == 404
    after = scrape(url)

    def grew(samples_before: dict, name: str, **lbl: str) -> float:
        return (value(after, name, **lbl) or 0) - (value(samples_before, name, **lbl) or 0)

    assert grew(before, "cam_server_http_requests_total", status="200", **labels) == 3
    assert grew(before, "cam_server_http_requests_total", status="404", **labels) == 1
    assert grew(before, "cam_server_http_requests_total", server="pipeline", route="unmatched", method="GET",
                status="404") == 1
    assert grew(before, "cam_server_http_request_duration_seconds_count", **labels) == 4
    # the raw path never becomes a label (bounded cardinality)
    assert not [lbl for lbl, _ in after["cam_server_http_requests_total"] if instance_id in lbl["route"]]
    # the camera server counts its own routes
    requests.get(f"{servers.camera.url}/api/v1/cam/test_camera/config", timeout=10)
    assert value(scrape(servers.camera.url), "cam_server_http_requests_total", server="camera",
                 route="/api/v1/cam/{camera_name}/config", method="GET", status="200") >= 1


def test_drops_appear_under_their_reason(servers, client):
    """A gate that drops (downsampling) and a slow function (the input falls behind)."""
    client.set_user_script("metrics_slow", SLOW_FUNCTION)
    gated, _ = client.create_instance_from_config({"camera_name": "test_camera", "downsampling": 4})
    slow, _ = client.create_instance_from_config({"camera_name": "test_camera", "function": "metrics_slow"})
    client.get_instance_message(gated, timeout=30)
    client.get_instance_message(slow, timeout=30)
    url = servers.pipeline.url
    gate_reason = "gates" if "dropped_gates" in STAT_FIELDS else "other"
    gated_labels = {"instance_id": gated, "reason": gate_reason}

    first = scrape(url)
    wait_until(lambda: value(scrape(url), "cam_server_instance_dropped_total", **gated_labels)
               > value(first, "cam_server_instance_dropped_total", **gated_labels) + 3, 10, "gate drops counted")
    samples = scrape(url)
    # 0.25 s per frame: the processing time histogram says so (no frame in a bucket below 0.25 s)
    count = value(samples, "cam_server_instance_processing_seconds_count", instance_id=slow)
    assert count >= 1
    assert value(samples, "cam_server_instance_processing_seconds_bucket", instance_id=slow, le="0.2") == 0
    assert value(samples, "cam_server_instance_processing_seconds_sum", instance_id=slow) / count >= 0.25
    if "dropped_input" in STAT_FIELDS:
        # 20 Hz in, 4 Hz processed: the input drops the frames it cannot take
        wait_until(lambda: value(scrape(url), "cam_server_instance_dropped_total", instance_id=slow,
                                 reason="input") > 5, 15, "input drops of the slow function counted")
    else:
        # TODO(dropped_input): once the statistics count input drops ("dropped_input", issue 10), this branch goes;
        # today frames the slow function cannot take are dropped uncounted by ZeroMQ's queue.
        assert value(samples, "cam_server_instance_dropped_total", instance_id=slow, reason="other") is not None


@pytest.mark.unit
def test_histogram_buckets_and_cost():
    """Bucket placement and cumulative read-out of the shared histograms; one observation costs well under 1 µs."""
    import multiprocessing as mp

    histograms = InstanceHistograms(mp.get_context("spawn"))
    for seconds in (0.0001, 0.0015, 0.0015, 0.3, 100.0):
        histograms.processing.observe(seconds)
    buckets, count, total = histograms.read()["processing_seconds"]
    cumulative = dict(buckets)
    assert count == 5 and total == pytest.approx(100.3031)
    assert cumulative[0.0005] == 1 and cumulative[0.002] == 3 and cumulative[0.5] == 4 and cumulative[5.0] == 4
    assert cumulative[float("inf")] == 5
    assert histograms.read()["latency_seconds"][1] == 0
    n = 200_000
    observe = histograms.latency.observe
    start = time.perf_counter()
    for _ in range(n):
        observe(0.0042)
    per_call = (time.perf_counter() - start) / n
    print(f"histogram observe: {per_call * 1e9:.0f} ns")
    assert per_call < 2e-6


@pytest.mark.unit
def test_grafana_dashboard_uses_exported_series():
    """docs/grafana-dashboard.json is valid JSON and every cam_server_* series it queries is one we export."""
    import json
    import re
    from pathlib import Path

    from cam_server.common.histograms import HISTOGRAMS
    from cam_server.rest import metrics

    dashboard = json.loads((Path(__file__).parent.parent / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|total|count|sum)$", "", n) for e in exprs for n in re.findall(r"cam_server_\w+", e)}
    exported = {metrics.PREFIX + name for name, _ in (*metrics.COUNTERS.values(), *metrics.GAUGES.values())}
    exported |= {metrics.PREFIX + n for n in (*HISTOGRAMS, "dropped", "cpu_seconds", "memory_rss_bytes", "restarts")}
    exported |= {"cam_server_instances", "cam_server_http_requests", "cam_server_http_request_duration_seconds"}
    assert used and used <= exported, used - exported
    assert len(dashboard["panels"]) >= 10
