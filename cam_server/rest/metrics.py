"""``GET /metrics``: both servers in the Prometheus text format (README "Monitoring").

Why this shape: the instances already keep their counters in shared memory
(:class:`~cam_server.common.process.SharedStats`) and their processing-time / latency histograms beside them
(:mod:`cam_server.common.histograms`); a custom :class:`Collector` reads them when Prometheus scrapes, so nothing
per frame crosses a process boundary and no thread copies values in the background. Each app has a registry of its
own (two servers in one test process must not mix). REST requests are counted and timed by a small ASGI middleware,
labelled by the route *template* (``/api/v1/pipeline/instance/{instance_id}/info``, never the raw path: bounded
cardinality; paths no route matches are ``unmatched``).

Series (every family has the label ``server``: ``camera`` or ``pipeline``; per instance also ``instance_id``,
``camera``, ``pipeline_type`` — ``instance_id``, not ``instance``, which Prometheus sets on every scraped series to
the target's address):

* ``cam_server_instance_frames_received_total``, ``..._frames_sent_total``, ``..._bytes_sent_total``,
  ``..._processing_errors_total``, ``..._reconnects_total``, ``..._source_restarts_total``;
* ``cam_server_instance_dropped_total{reason}``: one reason per statistics field ``dropped_<reason>``, found in
  ``STAT_FIELDS`` (new fields appear without code changes), plus ``other``: the total ``dropped`` less those parts
  (all drops while the statistics have no parts);
* ``cam_server_instance_processing_seconds`` (receive → send in a pipeline instance) and
  ``cam_server_instance_latency_seconds`` (the frame's own timestamp → send) histograms;
* gauges ``..._clients``, ``..._input_backlog`` (the ``input_queue`` field, where the statistics have it),
  ``..._rate`` / ``..._rate_in`` (messages/s), ``..._start_time_seconds``, ``..._restarts`` (earlier runs of the
  id that ended, as remembered: at most 10), ``..._memory_rss_bytes`` and the counter ``..._cpu_seconds_total``;
* per server: ``cam_server_instances{state}`` (running instances by state), ``cam_server_http_requests_total
  {route, method, status}``, the ``cam_server_http_request_duration_seconds{route, method}`` histogram, and
  prometheus_client's ``process_*`` series of the server process itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from cam_server.common.process import INSTANCE_STATES, STAT_FIELDS

METRICS = "/metrics"
PREFIX = "cam_server_instance_"
INSTANCE_LABELS = ("server", "instance_id", "camera", "pipeline_type")
# statistics field → (metric name without prefix / _total, help)
COUNTERS = {
    "frames_in": ("frames_received", "Frames (messages) the instance received or generated."),
    "frames_out": ("frames_sent", "Messages the instance sent."),
    "bytes_out": ("bytes_sent", "Bytes of the messages sent."),
    "errors": ("processing_errors", "Frames that failed in processing (or could not be sent)."),
    "reconnects": ("reconnects", "Reconnections to the source after it was lost or its settings changed."),
    "source_restarts": ("source_restarts", "Restarts of the source seen in its data (pulse ids from below)."),
}
GAUGES = {
    "clients": ("clients", "Connected stream clients."),
    "input_queue": ("input_backlog", "Frames received and waiting to be processed."),
    "rate": ("rate", "Messages sent per second, smoothed."),
    "rate_in": ("rate_in", "Messages received per second, smoothed."),
    "start_time": ("start_time_seconds", "Wall clock when the instance loop started."),
}
DROP_TOTAL = "dropped"
DROP_PARTS = tuple(f for f in STAT_FIELDS if f.startswith("dropped_"))  # reason = the rest of the name
HISTOGRAM_HELP = {
    "processing_seconds": "Time from a message's receive to its send, in the pipeline instance.",
    "latency_seconds": "End-to-end latency: the frame's timestamp to its send.",
}
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

InstancesProvider = Callable[[], list[dict[str, Any]]]


class InstanceCollector(Collector):
    """Reads every running instance's shared statistics and histograms at scrape time.

    ``instances()`` returns dicts with ``instance_id``, ``camera``, ``pipeline_type``, ``process``
    (:class:`~cam_server.common.process.InstanceProcess`) and ``restarts`` (the managers' ``metrics_instances``).
    """

    def __init__(self, server: str, instances: InstancesProvider) -> None:
        self._server = server
        self._instances = instances

    def describe(self) -> Iterable[Metric]:
        return []  # collected only at scrape time (no call of instances() at registration)

    def collect(self) -> Iterable[Metric]:
        counters = {f: CounterMetricFamily(PREFIX + name, doc, labels=INSTANCE_LABELS)
                    for f, (name, doc) in COUNTERS.items() if f in STAT_FIELDS}
        gauges = {f: GaugeMetricFamily(PREFIX + name, doc, labels=INSTANCE_LABELS)
                  for f, (name, doc) in GAUGES.items() if f in STAT_FIELDS}
        dropped = CounterMetricFamily(PREFIX + "dropped", "Frames dropped, by reason.",
                                      labels=(*INSTANCE_LABELS, "reason"))
        cpu = CounterMetricFamily(PREFIX + "cpu_seconds", "CPU time of the instance process (user + system).",
                                  labels=INSTANCE_LABELS)
        rss = GaugeMetricFamily(PREFIX + "memory_rss_bytes", "Resident memory of the instance process.",
                                labels=INSTANCE_LABELS)
        restarts = GaugeMetricFamily(PREFIX + "restarts", "Earlier runs of this instance id that ended (as "
                                     "remembered, at most 10).", labels=INSTANCE_LABELS)
        histograms = {name: HistogramMetricFamily(PREFIX + name, doc, labels=INSTANCE_LABELS)
                      for name, doc in HISTOGRAM_HELP.items()}
        by_state = dict.fromkeys(INSTANCE_STATES, 0)
        for entry in self._instances():
            process = entry["process"]
            if process is None or not process.is_alive():
                continue
            labels = [self._server, str(entry["instance_id"]), str(entry["camera"] or ""),
                      str(entry["pipeline_type"] or "")]
            stats = process.control.stats.snapshot()
            by_state[stats["state"]] = by_state.get(stats["state"], 0) + 1
            for field, family in counters.items():
                family.add_metric(labels, stats[field])
            for field, family in gauges.items():
                family.add_metric(labels, stats[field])
            parts = 0
            for field in DROP_PARTS:
                parts += stats[field]
                dropped.add_metric([*labels, field[len("dropped_"):]], stats[field])
            dropped.add_metric([*labels, "other"], max(0, stats[DROP_TOTAL] - parts))
            restarts.add_metric(labels, entry.get("restarts") or 0)
            usage = process.cpu_seconds_and_rss()
            if usage is not None:
                cpu.add_metric(labels, usage[0])
                rss.add_metric(labels, usage[1])
            for name, (buckets, _count, total) in process.control.histograms.read().items():
                histograms[name].add_metric(labels, [(_bound(b), c) for b, c in buckets], total)
        states = GaugeMetricFamily("cam_server_instances", "Running instances by state.", labels=("server", "state"))
        for state, count in by_state.items():
            states.add_metric([self._server, state], count)
        yield states
        yield from counters.values()
        yield dropped
        yield from gauges.values()
        yield cpu
        yield rss
        yield restarts
        yield from histograms.values()


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value))


class RequestMetrics:
    """ASGI middleware: counts (route template, method, status) and times (route template, method) every HTTP
    request. The route is read from ``scope["route"]`` after routing (FastAPI sets it)."""

    def __init__(self, app: Any, requests: Any, durations: Any) -> None:
        self.app = app
        self._requests, self._durations = requests, durations

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]  # an exception that escapes every handler ends as a 500

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            self._requests.labels(route, method, str(status[0])).inc()
            self._durations.labels(route, method).observe(time.perf_counter() - start)


def install_metrics(app: FastAPI, server: str, instances: InstancesProvider) -> CollectorRegistry:
    """``GET /metrics`` on ``app`` (``server``: "camera" or "pipeline") and the request middleware; returns the
    app's registry. Not in the OpenAPI document: its answer is the Prometheus text format, not the JSON envelope."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(InstanceCollector(server, instances))
    ProcessCollector(registry=registry)  # process_* of the server process itself
    requests = Counter("cam_server_http_requests", "REST requests by route template, method and status.",
                       ("server", "route", "method", "status"), registry=registry)
    durations = Histogram("cam_server_http_request_duration_seconds", "REST request latency by route template.",
                          ("server", "route", "method"), buckets=REQUEST_BUCKETS, registry=registry)
    app.add_middleware(RequestMetrics, requests=_Bound(requests, server), durations=_Bound(durations, server))

    @app.get(METRICS, include_in_schema=False)
    def get_metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return registry


class _Bound:
    """A labelled metric with the ``server`` label already given."""

    def __init__(self, metric: Any, server: str) -> None:
        self._metric, self._server = metric, server

    def labels(self, *values: str) -> Any:
        return self._metric.labels(self._server, *values)
