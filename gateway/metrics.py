"""Prometheus metrics of the data plane, served on the status port.

With several workers, `PROMETHEUS_MULTIPROC_DIR` makes prometheus-client aggregate them.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "render_metrics"]

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            10.0, 30.0)


class Metrics:
    """The gateway's instruments. One instance per process (prometheus-client is global)."""

    _instance: Metrics | None = None

    def __init__(self) -> None:
        self.requests = Counter(
            "keygate_requests", "Requests answered", ["route", "method", "status", "code"])
        self.latency = Histogram(
            "keygate_request_seconds", "Whole request time", ["route"], buckets=_BUCKETS)
        self.upstream_latency = Histogram(
            "keygate_upstream_seconds", "Time to the upstream's response headers", ["route"],
            buckets=_BUCKETS)
        self.key_lookups = Counter(
            "keygate_key_lookups", "Key lookups by the layer that answered", ["layer"])
        self.invalidations = Counter(
            "keygate_invalidations", "Key invalidations received")
        self.rate_limited = Counter(
            "keygate_rate_limited", "Requests refused by a rate limit", ["route"])
        self.upstream_errors = Counter(
            "keygate_upstream_errors", "Upstream failures", ["route", "code"])

    @classmethod
    def get(cls) -> Metrics:
        if cls._instance is None:
            cls._instance = Metrics()
        return cls._instance


def render_metrics() -> bytes:
    """The exposition text, aggregated over workers when running several."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()
