"""Counters, gauges and histograms, rendered in the Prometheus text format.

Strategy: a small, sans-IO metrics core (no ``prometheus_client``
dependency): metric objects hold plain numbers, a :class:`Registry` renders
them as the text exposition format 0.0.4
(https://prometheus.io/docs/instrumenting/exposition_formats/). Everything
runs on the server's event loop, so there are no locks: an increment is an
attribute update. Values that already live elsewhere (queue lengths, a
worker's credit) are not mirrored on every change but read at scrape time by
*collectors*, callables the registry runs before rendering, so the hot path
pays nothing for them.

Labelled metrics hand out one child per label-value tuple
(``requests.labels("200").inc()``); callers on hot paths keep the child.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from itertools import pairwise
from typing import ClassVar, Generic, TypeVar

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_LATENCY_BUCKETS",
    "Counter",
    "CounterChild",
    "Gauge",
    "GaugeChild",
    "Histogram",
    "HistogramChild",
    "Registry",
]

#: The media type of the text exposition format this module writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Request latency buckets in seconds: Prometheus' defaults (5 ms .. 10 s),
#: plus 1 and 2.5 ms for requests served in-process, and 30 and 60 s because
#: the gateway's request timeout is 60 s by default (a 504 lands in the last).
DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

LabelValues = tuple[str, ...]


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it: ``+Inf``, ``-Inf``, ``NaN``, or a number."""
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(value)


def escape_label_value(value: str) -> str:
    r"""Label values escape ``\``, ``"`` and newline (format 0.0.4)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    r"""HELP text escapes only ``\`` and newline (format 0.0.4)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_text(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


class CounterChild:
    """One label set of a :class:`Counter`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` (not negative: a counter only goes up)."""
        if amount < 0:
            raise ValueError("a counter cannot decrease")
        self.value += amount

    def set_total(self, value: float) -> None:
        """Mirror a count kept elsewhere (by a collector); it must never decrease."""
        self.value = value


class GaugeChild:
    """One label set of a :class:`Gauge`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def set(self, value: float) -> None:
        self.value = value

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount


class HistogramChild:
    """One label set of a :class:`Histogram`."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        #: Observations per bucket, not cumulative (the last one is +Inf).
        self.counts = [0] * (len(bounds) + 1)
        self.sum: float = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, since a bucket counts
        # observations less than *or equal to* its upper bound ("le").
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


_Child = TypeVar("_Child", CounterChild, GaugeChild, HistogramChild)


class _Metric(Generic[_Child]):
    """A metric family: a name, a help text, label names and one child per label set."""

    TYPE: ClassVar[str]

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL.match(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r}")
        self.name = name
        self.help = help
        self.labelnames: tuple[str, ...] = tuple(labelnames)
        self._children: dict[LabelValues, _Child] = {}
        # An unlabelled metric is its own (only) child, created at once so it
        # renders as 0 before the first event.
        self._default: _Child | None = None if labelnames else self._child(())

    def _new_child(self) -> _Child:
        raise NotImplementedError

    def _child(self, values: LabelValues) -> _Child:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._new_child()
        return child

    def labels(self, *values: str) -> _Child:
        """The child for these label values (created on first use)."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        return self._child(tuple(values))

    def remove(self, *values: str) -> None:
        """Forget one label set (a worker that left)."""
        self._children.pop(tuple(values), None)

    def clear(self) -> None:
        """Forget every label set (collectors rebuild them on each scrape)."""
        if self.labelnames:
            self._children.clear()

    def _only(self) -> _Child:
        if self._default is None:
            raise ValueError(f"{self.name} has labels {self.labelnames}: use .labels()")
        return self._default

    def render(self) -> Iterator[str]:
        """The HELP and TYPE lines, then one line per sample."""
        yield f"# HELP {self.name} {escape_help(self.help)}"
        yield f"# TYPE {self.name} {self.TYPE}"
        for values in sorted(self._children):
            yield from self._samples(values, self._children[values])

    def _samples(self, values: LabelValues, child: _Child) -> Iterator[str]:
        raise NotImplementedError


_Scalar = TypeVar("_Scalar", CounterChild, GaugeChild)


class _ScalarMetric(_Metric[_Scalar]):
    """A metric with one number per label set."""

    def _samples(self, values: LabelValues, child: _Scalar) -> Iterator[str]:
        yield f"{self.name}{_label_text(self.labelnames, values)} {format_value(child.value)}"


class Counter(_ScalarMetric[CounterChild]):
    """A count that only goes up. By convention its name ends in ``_total``."""

    TYPE = "counter"

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def inc(self, amount: float = 1) -> None:
        self._only().inc(amount)

    def set_total(self, value: float) -> None:
        """Mirror a count kept elsewhere; see :meth:`CounterChild.set_total`."""
        self._only().set_total(value)

    @property
    def value(self) -> float:
        return self._only().value


class Gauge(_ScalarMetric[GaugeChild]):
    """A value that goes up and down (a queue length, a worker's credit)."""

    TYPE = "gauge"

    def _new_child(self) -> GaugeChild:
        return GaugeChild()

    def set(self, value: float) -> None:
        self._only().set(value)

    def inc(self, amount: float = 1) -> None:
        self._only().inc(amount)

    def dec(self, amount: float = 1) -> None:
        self._only().dec(amount)

    @property
    def value(self) -> float:
        return self._only().value


class Histogram(_Metric[HistogramChild]):
    """Observations counted into buckets by upper bound, with their sum and count.

    Args:
        buckets: upper bounds, increasing; ``+Inf`` is always added last.
    """

    TYPE = "histogram"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = (),
                 buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS) -> None:
        bounds = tuple(float(b) for b in buckets if not math.isinf(b))
        if not bounds or any(a >= b for a, b in pairwise(bounds)):
            raise ValueError("histogram buckets must be increasing and not empty")
        if "le" in labelnames:
            raise ValueError("'le' is reserved for histogram buckets")
        self.bounds = bounds
        super().__init__(name, help, labelnames)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def observe(self, value: float) -> None:
        self._only().observe(value)

    def _samples(self, values: LabelValues, child: HistogramChild) -> Iterator[str]:
        names = (*self.labelnames, "le")
        cumulative = 0
        for bound, count in zip((*self.bounds, math.inf), child.counts, strict=True):
            cumulative += count
            labels = _label_text(names, (*values, format_value(bound)))
            yield f"{self.name}_bucket{labels} {cumulative}"
        labels = _label_text(self.labelnames, values)
        yield f"{self.name}_sum{labels} {format_value(child.sum)}"
        yield f"{self.name}_count{labels} {cumulative}"


class Registry:
    """The metrics one endpoint exposes, in registration order."""

    def __init__(self) -> None:
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}
        self._collectors: list[Callable[[], None]] = []

    def register(self, *metrics: Counter | Gauge | Histogram) -> None:
        """Add metrics; a name may be registered once."""
        for metric in metrics:
            if metric.name in self._metrics:
                raise ValueError(f"metric {metric.name} registered twice")
            self._metrics[metric.name] = metric

    def add_collector(self, collector: Callable[[], None]) -> None:
        """Run ``collector`` before each render, to set gauges from live state."""
        self._collectors.append(collector)

    def render(self) -> str:
        """Every metric in the text exposition format 0.0.4 (ends with a newline)."""
        for collector in self._collectors:
            collector()
        lines: list[str] = []
        for metric in self._metrics.values():
            lines.extend(metric.render())
        return "\n".join(lines) + "\n" if lines else ""
