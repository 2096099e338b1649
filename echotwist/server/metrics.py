"""Prometheus metrics from L{ServerStats}, served at C{/metrics}.

Needs the C{metrics} extra (C{pip install echotwist[metrics]}), which
brings C{prometheus_client}.  The hot path only bumps the plain counters
of L{ServerStats}; L{StatsCollector} reads them when Prometheus scrapes.
Beside them: the process's own figures (C{process_open_fds},
C{process_resident_memory_bytes}, CPU time...: C{prometheus_client}'s
process collector, read from C{/proc} on Linux) and
C{echotwist_build_info}.  Names follow Prometheus's: the unit last, then
C{_total} for counters.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from twisted.web.http import Request
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import Site

import twisted
from echotwist import __version__
from echotwist.server.limits import DENIED, EMFILE, LIMIT, PER_IP
from echotwist.server.stats import ServerStats
from echotwist.server.udp import DROP_REASONS

# Reasons exported even before they first happen, so that dashboards and
# alerts see a 0 rather than a missing series.
REJECT_REASONS = (LIMIT, PER_IP, DENIED, EMFILE)


class StatsCollector:
    """A C{prometheus_client} custom collector reading a L{ServerStats}."""

    def __init__(self, stats: ServerStats) -> None:
        self.stats = stats

    def collect(self) -> Iterable[Metric]:
        """Describe the statistics as they are now."""
        stats = self.stats
        yield CounterMetricFamily(
            "echotwist_connections",
            "Connections accepted and served.",
            value=stats.connectionsTotal,
        )
        yield GaugeMetricFamily(
            "echotwist_connections_active",
            "Connections open now.",
            value=stats.connectionsActive,
        )
        echoed = CounterMetricFamily(
            "echotwist_echoed_bytes",
            "Bytes echoed, by transport.",
            labels=["transport"],
        )
        for transport, count in sorted(stats.bytesEchoedNow().items()):
            echoed.add_metric([transport], count)
        yield echoed
        rejected = CounterMetricFamily(
            "echotwist_rejected",
            "Connections refused or not accepted, by reason.",
            labels=["reason"],
        )
        for reason in sorted({*REJECT_REASONS, *stats.rejected}):
            rejected.add_metric([reason], stats.rejected[reason])
        yield rejected
        dropped = CounterMetricFamily(
            "echotwist_udp_dropped",
            "UDP datagrams dropped, by reason.",
            labels=["reason"],
        )
        for reason in sorted({*DROP_REASONS, *stats.udpDropped}):
            dropped.add_metric([reason], stats.udpDropped[reason])
        yield dropped
        if stats.worker is not None:
            restarts = CounterMetricFamily(
                "echotwist_worker_restarts",
                "Times the supervisor replaced this worker after it exited"
                " unexpectedly (a reload is no restart).",
                labels=["worker"],
            )
            restarts.add_metric([str(stats.worker)], stats.workerRestarts)
            yield restarts
        histogram = stats.durations
        yield HistogramMetricFamily(
            "echotwist_connection_duration_seconds",
            "How long served connections lasted.",
            buckets=[
                ("+Inf" if math.isinf(bound) else repr(bound), count)
                for bound, count in histogram.cumulative()
            ],
            sum_value=histogram.total,
        )


class BuildInfo:
    """C{echotwist_build_info}: 1, labelled with the versions running."""

    def collect(self) -> Iterable[Metric]:
        """The one sample."""
        info = GaugeMetricFamily(
            "echotwist_build_info",
            "Always 1; the labels say which echotwist, Twisted and Python run.",
            labels=["version", "twisted", "python"],
        )
        info.add_metric(
            [__version__, twisted.__version__, platform.python_version()], 1
        )
        yield info


def metricsRegistry(stats: ServerStats, proc: str = "/proc") -> CollectorRegistry:
    """A registry of its own (not the global one) exporting C{stats}, the
    build information and the process's figures read from C{proc} (none
    where it is missing).
    """
    registry = CollectorRegistry()
    registry.register(StatsCollector(stats))
    registry.register(BuildInfo())
    ProcessCollector(proc=proc, registry=registry)
    return registry


class MetricsPage(Resource):
    """C{GET /metrics}: the registry in Prometheus's text format.

    C{prometheus_client.twisted.MetricsResource} would do, but it imports
    the global reactor at import time and renders in a thread pool; reading
    a few counters is quick, so this renders in the reactor thread.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        Resource.__init__(self)
        self.registry = registry

    def render_GET(self, request: IRequest) -> bytes:
        """Render the current metrics."""
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.registry)


class QuietSite(Site):
    """A L{Site} that writes no access log line.

    Prometheus scrapes every few seconds; a line for each scrape would
    bury the server's own log.
    """

    def log(self, request: Request) -> None:
        """Log nothing."""


def metricsSite(stats: ServerStats) -> Site:
    """A web site serving C{stats} at C{/metrics}, without an access log."""
    root = Resource()
    root.putChild(b"metrics", MetricsPage(metricsRegistry(stats)))
    site = QuietSite(root)
    site.noisy = False
    return site
