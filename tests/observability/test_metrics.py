"""The metrics core: exact text exposition format 0.0.4, escaping, histogram buckets."""

from __future__ import annotations

import math

import pytest

from zmqhttp.observability.metrics import (
    CONTENT_TYPE,
    Counter,
    Gauge,
    Histogram,
    Registry,
    escape_label_value,
    format_value,
)


def test_counter_and_gauge_render_exactly() -> None:
    registry = Registry()
    requests = Counter("app_requests_total", "Requests served.", ("code",))
    depth = Gauge("app_queue_length", "Waiting requests.")
    registry.register(requests, depth)
    requests.labels("200").inc()
    requests.labels("200").inc(2)
    requests.labels("503").inc()
    depth.set(7)
    assert registry.render() == (
        "# HELP app_requests_total Requests served.\n"
        "# TYPE app_requests_total counter\n"
        'app_requests_total{code="200"} 3\n'
        'app_requests_total{code="503"} 1\n'
        "# HELP app_queue_length Waiting requests.\n"
        "# TYPE app_queue_length gauge\n"
        "app_queue_length 7\n"
    )


def test_unlabelled_metrics_render_zero_before_any_event() -> None:
    registry = Registry()
    registry.register(Counter("x_total", "X."))
    assert registry.render().splitlines()[-1] == "x_total 0"


def test_labelled_metric_without_children_renders_only_its_header() -> None:
    registry = Registry()
    registry.register(Gauge("worker_credit", "Credit.", ("worker",)))
    assert registry.render() == (
        "# HELP worker_credit Credit.\n# TYPE worker_credit gauge\n")


def test_label_values_and_help_are_escaped() -> None:
    registry = Registry()
    gauge = Gauge("g", 'Help with \\ backslash,\nnewline and "quotes".', ("a", "b"))
    registry.register(gauge)
    gauge.labels('say "hi"\n', "C:\\dir").set(1.5)
    assert registry.render() == (
        '# HELP g Help with \\\\ backslash,\\nnewline and "quotes".\n'
        "# TYPE g gauge\n"
        'g{a="say \\"hi\\"\\n",b="C:\\\\dir"} 1.5\n'
    )
    assert escape_label_value("plain") == "plain"


def test_histogram_buckets_are_cumulative_with_inf_sum_and_count() -> None:
    registry = Registry()
    latency = Histogram("lat_seconds", "Latency.", buckets=(0.1, 1, 5))
    registry.register(latency)
    for value in (0.05, 0.1, 0.5, 1.0, 2.0, 100.0):
        latency.observe(value)
    assert registry.render() == (
        "# HELP lat_seconds Latency.\n"
        "# TYPE lat_seconds histogram\n"
        'lat_seconds_bucket{le="0.1"} 2\n'  # 0.05 and 0.1: le is "less or equal"
        'lat_seconds_bucket{le="1.0"} 4\n'
        'lat_seconds_bucket{le="5.0"} 5\n'
        'lat_seconds_bucket{le="+Inf"} 6\n'
        "lat_seconds_sum 103.65\n"
        "lat_seconds_count 6\n"
    )


def test_labelled_histogram_puts_le_last() -> None:
    registry = Registry()
    latency = Histogram("h", "H.", ("route",), buckets=(1,))
    registry.register(latency)
    latency.labels("/a").observe(0.5)
    lines = registry.render().splitlines()
    assert lines[2:] == [
        'h_bucket{route="/a",le="1.0"} 1',
        'h_bucket{route="/a",le="+Inf"} 1',
        'h_sum{route="/a"} 0.5',
        'h_count{route="/a"} 1',
    ]


def test_empty_histogram_renders_zeros() -> None:
    registry = Registry()
    registry.register(Histogram("h", "H.", buckets=(1, 2)))
    assert registry.render().splitlines()[2:] == [
        'h_bucket{le="1.0"} 0', 'h_bucket{le="2.0"} 0', 'h_bucket{le="+Inf"} 0',
        "h_sum 0.0", "h_count 0"]


def test_collectors_run_before_each_render() -> None:
    registry = Registry()
    gauge = Gauge("live", "Live value.", ("k",))
    registry.register(gauge)
    state = {"a": 1}

    def collect() -> None:
        gauge.clear()
        for key, value in state.items():
            gauge.labels(key).set(value)

    registry.add_collector(collect)
    assert 'live{k="a"} 1' in registry.render()
    state = {"b": 2}
    text = registry.render()
    assert 'live{k="b"} 2' in text
    assert 'k="a"' not in text  # gone keys disappear, never stale


def test_special_values_format_as_prometheus_does() -> None:
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"
    assert format_value(math.nan) == "NaN"
    assert format_value(3) == "3"
    assert format_value(0.25) == "0.25"


def test_misuse_is_refused() -> None:
    with pytest.raises(ValueError):
        Counter("bad name", "x")
    with pytest.raises(ValueError):
        Gauge("g", "x", ("__reserved",))
    with pytest.raises(ValueError):
        Histogram("h", "x", ("le",))
    with pytest.raises(ValueError):
        Histogram("h", "x", buckets=(2, 1))
    counter = Counter("c_total", "x", ("code",))
    with pytest.raises(ValueError):
        counter.labels("1", "2")
    with pytest.raises(ValueError):
        counter.inc()  # labelled: needs .labels()
    with pytest.raises(ValueError):
        Counter("d_total", "x").inc(-1)
    registry = Registry()
    registry.register(counter)
    with pytest.raises(ValueError):
        registry.register(Counter("c_total", "again"))


def test_content_type_is_the_0_0_4_text_format() -> None:
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
