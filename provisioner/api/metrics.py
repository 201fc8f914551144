"""A tiny in-process metrics registry with Prometheus text output.

No dependency: counters and histograms with labels are all the API needs, and other modules
(TFTP, HTTP serving, push) can count into the same registry::

    from provisioner.api.metrics import REGISTRY
    REGISTRY.files_served.inc(protocol="tftp")

Values live in this process only; with several ``serve`` instances Prometheus scrapes each.
"""

from __future__ import annotations

import abc
import bisect
import threading
from collections.abc import Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

LabelKey = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(key: LabelKey, extra: tuple[tuple[str, str], ...] = ()) -> str:
    pairs = (*key, *extra)
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _fmt(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Metric(abc.ABC):
    kind = ""

    def __init__(self, name: str, help_text: str, labelnames: Iterable[str] = ()):
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> LabelKey:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name}: labels must be {self.labelnames}, got {sorted(labels)}")
        return tuple((n, str(labels[n])) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    @abc.abstractmethod
    def render(self) -> list[str]:
        """The metric's lines in Prometheus text format."""


class Counter(_Metric):
    """A value that only goes up."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Iterable[str] = ()):
        super().__init__(name, help_text, labelnames)
        self._values: dict[LabelKey, float] = {}

    def inc(self, amount: float = 1.0, /, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [*self.header(), *(f"{self.name}{_labels(k)} {_fmt(v)}" for k, v in items)]


class Histogram(_Metric):
    """Observations counted into cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Iterable[str] = (),
        buckets: tuple[float, ...] = DEFAULT_BUCKETS,
    ):
        super().__init__(name, help_text, labelnames)
        self.buckets = tuple(sorted(buckets))
        self._series: dict[LabelKey, list[float]] = {}  # bucket counts..., sum, count

    def observe(self, value: float, /, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            series = self._series.setdefault(key, [0.0] * (len(self.buckets) + 2))
            # Buckets are cumulative: every bound at or above the value counts it.
            for i in range(bisect.bisect_left(self.buckets, value), len(self.buckets)):
                series[i] += 1
            series[-2] += value
            series[-1] += 1

    def render(self) -> list[str]:
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        lines = self.header()
        for key, series in items:
            for bound, count in zip(self.buckets, series, strict=False):
                le = (("le", _fmt(bound)),)
                lines.append(f"{self.name}_bucket{_labels(key, le)} {_fmt(count)}")
            lines.append(f"{self.name}_bucket{_labels(key, (('le', '+Inf'),))} {_fmt(series[-1])}")
            lines.append(f"{self.name}_sum{_labels(key)} {_fmt(series[-2])}")
            lines.append(f"{self.name}_count{_labels(key)} {_fmt(series[-1])}")
        return lines


class Registry:
    """The process's metrics. The API's own and the shared serving/push counters are fixed."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._lock = threading.Lock()
        self.requests = self.counter(
            "provisioner_api_requests_total",
            "REST API requests by route template, method and status.",
            ("route", "method", "status"),
        )
        self.latency = self.histogram(
            "provisioner_api_request_duration_seconds",
            "REST API request latency by route template, method and status.",
            ("route", "method", "status"),
        )
        self.blocked_sources = self.counter(
            "provisioner_blocked_sources_total",
            "Sources blocked for sweeping (misses over the limit), by protocol.",
            ("protocol",),
        )
        self.files_served = self.counter(
            "provisioner_files_served_total",
            "Device files served, by protocol.",
            ("protocol",),
        )
        self.push_results = self.counter(
            "provisioner_push_results_total",
            "Pushes to devices by result (ok, failed, unchanged, rolled_back).",
            ("result",),
        )

    def _add(self, metric: _Metric) -> _Metric:
        with self._lock:
            existing = self._metrics.get(metric.name)
            if existing is not None:
                if type(existing) is not type(metric) or existing.labelnames != metric.labelnames:
                    raise ValueError(f"metric {metric.name} already registered differently")
                return existing
            self._metrics[metric.name] = metric
            return metric

    def counter(self, name: str, help_text: str, labelnames: Iterable[str] = ()) -> Counter:
        """The counter ``name``, made on first use (same name and labels: the same counter)."""
        metric = self._add(Counter(name, help_text, labelnames))
        assert isinstance(metric, Counter)
        return metric

    def histogram(
        self,
        name: str,
        help_text: str,
        labelnames: Iterable[str] = (),
        buckets: tuple[float, ...] = DEFAULT_BUCKETS,
    ) -> Histogram:
        metric = self._add(Histogram(name, help_text, labelnames, buckets))
        assert isinstance(metric, Histogram)
        return metric

    def render(self) -> str:
        """Every metric in the Prometheus text exposition format (version 0.0.4)."""
        with self._lock:
            metrics = sorted(self._metrics.values(), key=lambda m: m.name)
        lines: list[str] = []
        for m in metrics:
            lines.extend(m.render())
        return "\n".join(lines) + "\n"


REGISTRY = Registry()
