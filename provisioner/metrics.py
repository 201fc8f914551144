"""The process's metrics, on ``prometheus_client``: every layer counts into one registry.

Serving, push and the REST API share it; ``/metrics`` renders it::

    from provisioner.metrics import METRICS
    METRICS.files_served.labels(protocol="tftp").inc()

The registry is private to :class:`Metrics` (not prometheus_client's global one), so a test
can make its own without clashing. Values live in this process only; with several ``serve``
instances Prometheus scrapes each.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

# The text exposition format our names and labels fit (scrapers of every age read it).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Request latency buckets in seconds (the device path answers in milliseconds).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every metric the product exports, on its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("route", "method", "status")
        self.requests = Counter(
            "provisioner_api_requests_total",
            "REST API requests by route template, method and status.",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "provisioner_api_request_duration_seconds",
            "REST API request latency by route template, method and status.",
            labels,
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.fetches = Counter(
            "provisioner_fetches_total",
            "Device fetches by protocol and result (served, not_found, blocked).",
            ("protocol", "result"),
            registry=self.registry,
        )
        self.blocked_sources = Counter(
            "provisioner_blocked_sources_total",
            "Sources blocked for sweeping (misses over the limit), by protocol.",
            ("protocol",),
            registry=self.registry,
        )
        self.files_served = Counter(
            "provisioner_files_served_total",
            "Device files served, by protocol.",
            ("protocol",),
            registry=self.registry,
        )
        self.push_results = Counter(
            "provisioner_push_results_total",
            "Pushes to devices by result (ok, failed, unchanged, rolled_back).",
            ("result",),
            registry=self.registry,
        )

    def render(self) -> bytes:
        """Every metric in the Prometheus text exposition format."""
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value (0 when it was never counted)."""
        return self.registry.get_sample_value(name, labels) or 0.0


METRICS = Metrics()
