"""Prometheus metrics in the text exposition format (version 0.0.4), without a dependency.

Counters and histograms live in this process: with ``serve --workers N`` each worker process
answers ``/metrics`` with its own figures (scrape each, or sum what the load balancer spreads).
"""

from __future__ import annotations

import bisect
import math
import threading
import time

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    escaped = (str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') for v in values)
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, escaped, strict=True)) + "}"


def _num(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Counter:
    kind = "counter"

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()):  # noqa: A002
        self.name, self.help, self.label_names = name, help, labels
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def samples(self) -> list[str]:
        with self._lock:
            return [f"{self.name}{_labels(self.label_names, k)} {_num(v)}" for k, v in sorted(self._values.items())]


class Gauge(Counter):
    kind = "gauge"

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = (), read=None):  # noqa: A002
        super().__init__(name, help, labels)
        self._read = read  # a function returning {labels: value}, read at scrape time

    def set(self, *labels: str, value: float) -> None:
        with self._lock:
            self._values[labels] = value

    def samples(self) -> list[str]:
        if self._read is not None:
            with self._lock:
                self._values = dict(self._read())
        return super().samples()


class Histogram:
    kind = "histogram"

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = (),  # noqa: A002
                 buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.name, self.help, self.label_names = name, help, labels
        self.buckets = tuple(sorted(buckets))
        self._series: dict[tuple[str, ...], list] = {}  # labels -> [bucket counts..., count, sum]
        self._lock = threading.Lock()

    def observe(self, value: float, *labels: str) -> None:
        i = bisect.bisect_left(self.buckets, value)
        with self._lock:
            series = self._series.setdefault(labels, [0] * (len(self.buckets) + 1) + [0.0])
            series[i] += 1  # the first bucket whose bound >= value (or the +Inf slot)
            series[-1] += value

    def samples(self) -> list[str]:
        out = []
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        for labels, series in items:
            cumulative = 0
            for bound, n in zip((*self.buckets, math.inf), series[:-1], strict=True):
                cumulative += n
                out.append(f"{self.name}_bucket{_labels((*self.label_names, 'le'), (*labels, _num(bound)))} "
                           f"{cumulative}")
            out.append(f"{self.name}_count{_labels(self.label_names, labels)} {cumulative}")
            out.append(f"{self.name}_sum{_labels(self.label_names, labels)} {_num(series[-1])}")
        return out


class Registry:
    def __init__(self):
        self.metrics: list = []
        self.started = time.time()

    def add(self, metric):
        self.metrics.append(metric)
        return metric

    def exposition(self) -> str:
        lines = []
        for m in self.metrics:
            lines += [f"# HELP {m.name} {m.help}", f"# TYPE {m.name} {m.kind}", *m.samples()]
        return "\n".join(lines) + "\n"


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The server's metrics, one set per app."""

    def __init__(self, pool_stats=None):
        r = self.registry = Registry()
        self.requests = r.add(Counter("imgsearch_http_requests_total", "HTTP requests answered",
                                      ("method", "route", "status")))
        self.latency = r.add(Histogram("imgsearch_http_request_duration_seconds",
                                       "time from the request's arrival to the end of the response",
                                       ("method", "route")))
        self.in_flight = r.add(Gauge("imgsearch_http_requests_in_flight", "requests being answered now"))
        self.in_flight.set(value=0)
        self.stage = r.add(Histogram("imgsearch_stage_duration_seconds",
                                     "time per stage of the work behind a request", ("stage",)))
        self.pool = r.add(Gauge("imgsearch_db_pool", "the database connection pool (psycopg_pool stats)",
                                ("stat",), read=pool_stats))
        r.add(Gauge("imgsearch_process_start_time_seconds", "when this server process started",
                    read=lambda: {(): r.started}))

    def exposition(self) -> str:
        return self.registry.exposition()
