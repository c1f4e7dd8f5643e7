"""Prometheus metrics of the data plane, served on the status port.

`Metrics.count()` tallies answered requests and their times in plain Python lists (no locks),
a batch at a time (`Outcomes` hands them over); `Metrics.flush()` adds the tallies to the
Prometheus instruments. The key store and the invalidation listener keep plain integer
counters on the hot path; `Metrics.sync()` turns their growth into Prometheus counters, at
each scrape of a single-process gateway and every second in each worker of a multi-worker one.

With several workers, `enable_multiprocess()` makes every worker write its values to files
in one folder, which the supervisor's status port adds up (prometheus-client's
multiprocess mode).
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Mapping
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from gateway.observability.outcomes import Outcome

__all__ = [
    "CONTENT_TYPE_LATEST",
    "Metrics",
    "enable_multiprocess",
    "render_metrics",
]

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            10.0, 30.0)
_BUCKETS_US = tuple(round(bound * 1_000_000) for bound in _BUCKETS)  # what requests carry
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_UPSTREAM_FAILURES = frozenset({502, 504})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_RequestLabels = tuple[str, str, int, str]


class _Tally:
    """One label set's requests since the last flush: a count and two local histograms.

    prometheus-client takes a lock per increment (three per histogram observation); adding
    up in plain lists and flushing once a second keeps that off the hot path.
    """

    __slots__ = ("count", "latency", "latency_sum", "upstream", "upstream_sum")

    def __init__(self) -> None:
        self.count = 0
        self.latency = [0] * (len(_BUCKETS) + 1)  # the last one is +Inf
        self.latency_sum = 0  # microseconds
        self.upstream = [0] * (len(_BUCKETS) + 1)
        self.upstream_sum = 0


def _flush_histogram(child: Histogram, counts: list[int], micros: int) -> None:
    # prometheus-client keeps per-bucket (not cumulative) counts and a sum, and adds them
    # up when collected: adding a batch is the same as observing its values one by one.
    for index, count in enumerate(counts):
        if count:
            child._buckets[index].inc(count)
    child._sum.inc(micros / 1_000_000)


class Metrics:
    """The gateway's instruments. One instance per process (prometheus-client is global)."""

    _instance: Metrics | None = None

    def __init__(self) -> None:
        self.requests = Counter(
            "keygate_requests", "Requests answered, by route pattern, method, status and "
            "error code ('' for answers that are not the gateway's own errors)",
            ["route", "method", "status", "code"])
        self.latency = Histogram(
            "keygate_request_seconds", "Whole request time, body streaming included", ["route"],
            buckets=_BUCKETS)
        self.upstream_latency = Histogram(
            "keygate_upstream_seconds", "Time spent on the upstream, body streaming included",
            ["route"], buckets=_BUCKETS)
        self.key_cache = Counter(
            "keygate_key_cache", "Key lookups per cache layer, hit or miss",
            ["layer", "result"])
        self.key_store = Counter(
            "keygate_key_store_lookups", "Key lookups that reached PostgreSQL: answered, served "
            "stale from memory while it was down, or refused (503)", ["result"])
        self.invalidations = Counter(
            "keygate_invalidations", "Key invalidations received (Redis pub/sub or PostgreSQL "
            "NOTIFY)")
        self.rate_limited = Counter(
            "keygate_rate_limited", "Requests refused by a rate limit", ["route"])
        self.upstream_errors = Counter(
            "keygate_upstream_errors", "Upstream failures (502 refused or reset, 504 timeout, "
            "ABORTED: failed mid-answer, the client cut off)",
            ["route", "code"])
        # Streams: counted by `gateway.streams` in plain integers, added here every sweep.
        self.stream_sessions = Counter(
            "keygate_stream_sessions", "Stream sessions ended, by stream path and the close "
            "code the client was sent (1006: the connection was lost without one)",
            ["stream", "close_code"])
        self.stream_open = Gauge(
            "keygate_stream_open_sessions", "Stream sessions open now", ["stream"],
            multiprocess_mode="livesum")
        self.stream_messages = Counter(
            "keygate_stream_messages", "Stream messages passed on, by stream path and direction "
            "(in: client to upstream, out: upstream to client)", ["stream", "direction"])
        self.stream_refusals = Counter(
            "keygate_stream_refusals", "Stream upgrades, sessions and messages refused by the "
            "gateway, by stream path and error code", ["stream", "code"])
        self._tallies: dict[_RequestLabels, _Tally] = {}
        self._seen: dict[str, int] = {}

    @classmethod
    def get(cls) -> Metrics:
        if cls._instance is None:
            cls._instance = Metrics()
        return cls._instance

    def count(self, outcomes: list[Outcome]) -> None:
        """Count answered requests (added to Prometheus at the next `sync()`)."""
        tallies, buckets, methods, bucket_of = self._tallies, _BUCKETS_US, _METHODS, bisect_left
        for outcome in outcomes:
            method, route, status, code = (outcome.method, outcome.route, outcome.status,
                                           outcome.code)
            micros, upstream = outcome.micros, outcome.upstream_micros
            if method not in methods:
                method = "OTHER"  # a client can send any token: keep the label set bounded
            if route is None:
                route = "unmatched"
            labels = (route, method, status, code)
            tally = tallies.get(labels)
            if tally is None:
                tally = tallies[labels] = _Tally()
            tally.count += 1
            tally.latency[bucket_of(buckets, micros)] += 1
            tally.latency_sum += micros
            if upstream is not None:
                tally.upstream[bucket_of(buckets, upstream)] += 1
                tally.upstream_sum += upstream
            if code:
                if code == "RATELIMIT":
                    self.rate_limited.labels(route).inc()
                elif status in _UPSTREAM_FAILURES:
                    self.upstream_errors.labels(route, code).inc()

    def flush(self) -> None:
        """Add the requests tallied since the last flush to the Prometheus instruments."""
        tallies, self._tallies = self._tallies, {}
        for (route, method, status, code), tally in tallies.items():
            # Histograms first: once a scrape sees the count, it sees their times too.
            _flush_histogram(self.latency.labels(route), tally.latency, tally.latency_sum)
            if tally.upstream_sum or any(tally.upstream):
                _flush_histogram(self.upstream_latency.labels(route), tally.upstream,
                                 tally.upstream_sum)
            self.requests.labels(route, method, str(status), code).inc(tally.count)

    def sync(self, counters: Mapping[str, int]) -> None:
        """Flush the tallies; add what the process's own counters gained since the last sync.

        `counters` are running totals named `layer.result` (`memory.hit`, `redis.miss`,
        `postgres.answered`, ...) or `invalidations`.
        """
        self.flush()
        for name, value in counters.items():
            gained = value - self._seen.get(name, 0)
            if gained <= 0:
                continue
            self._seen[name] = value
            layer, _, result = name.partition(".")
            if layer == "invalidations":
                self.invalidations.inc(gained)
            elif layer == "postgres":
                self.key_store.labels(result).inc(gained)
            else:
                self.key_cache.labels(layer, result).inc(gained)

def enable_multiprocess(folder: str) -> None:
    """Make metrics created from now on (in this process and its forks) write to `folder`.

    Called by the supervisor before it forks: files left by an earlier run are removed, or
    their counts would be added to this run's.
    """
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    for leftover in path.glob("*.db"):
        leftover.unlink(missing_ok=True)
    os.environ[_MULTIPROC_ENV] = folder
    # prometheus-client picks its value class when imported; pick again now the folder is set.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def render_metrics() -> bytes:
    """The exposition text, aggregated over workers when running several."""
    if os.environ.get(_MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()
