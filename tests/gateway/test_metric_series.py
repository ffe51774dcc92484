"""gateway/metric_series.py: the declaring helper every metrics group uses, and the label-child
cache of the request path."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

import gateway.metric_series as ms


def test_series_names_registers_and_passes_what_differs():
    reg = CollectorRegistry()
    s = ms.Series(reg, ms.PREFIX + "demo_")
    c = s.counter("hits_total", "Hits.", ["backend"])
    g = s.gauge("depth", "Depth.", mode="livemax")
    h = s.histogram("wait_seconds", "Wait.", ["backend"], buckets=(0.5, 2.0))
    c.labels("local").inc(3)
    g.set(7)
    h.labels("local").observe(1.0)
    text = generate_latest(reg).decode()
    assert 'gateway_demo_hits_total{backend="local"} 3.0' in text
    assert "# HELP gateway_demo_depth Depth." in text and "gateway_demo_depth 7.0" in text
    assert 'gateway_demo_wait_seconds_bucket{backend="local",le="0.5"} 0.0' in text
    assert 'gateway_demo_wait_seconds_bucket{backend="local",le="2.0"} 1.0' in text
    assert g._multiprocess_mode == "livemax"  # how worker processes' values merge


def test_children_are_looked_up_once_per_metric_and_labels():
    s = ms.Series(CollectorRegistry())
    a = s.counter("a_total", "A.", ["x"])
    b = s.counter("b_total", "B.", ["x"])
    ch = ms.Children()
    assert ch.get(a, "1") is ch.get(a, "1")
    assert ch.get(a, "1") is not ch.get(a, "2") and ch.get(a, "1") is not ch.get(b, "1")
    ch.get(a, "1").inc()
    assert a.labels("1")._value.get() == 1.0


def test_public_surface():
    assert set(ms.__all__) == {"PREFIX", "Children", "Series"}
    assert all(hasattr(ms, n) for n in ms.__all__)
