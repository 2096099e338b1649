"""Unit tests for L{echotwist.server.metrics}: the collector and the /metrics page."""

from __future__ import annotations

import signal
from typing import cast

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest
from twisted.web.test.requesthelper import DummyRequest

from echotwist.server.listening import ListeningService
from echotwist.server.metrics import MetricsPage, metricsRegistry, metricsSite
from echotwist.server.stats import ServerStats
from echotwist.server.udp import DROP_REASONS
from echotwist.tap import makeService
from echotwist.test.test_tap_hardening import parse


def samples(stats: ServerStats) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Scrape C{stats} and index every sample by name and labels."""
    text = generate_latest(metricsRegistry(stats)).decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class CollectorTests(SynchronousTestCase):
    """The collector exports L{ServerStats} as read at scrape time."""

    def test_counters(self) -> None:
        """Connections, bytes by transport, rejections and UDP drops by reason."""
        stats = ServerStats()
        stats.connectionOpened()
        stats.connectionOpened()
        stats.connectionClosed(0.5)
        stats.echoed("tcp", 10)
        stats.echoed("unix", 3)
        stats.reject("per-ip")
        stats.dropDatagram("privileged-port")
        found = samples(stats)
        self.assertEqual(found[("echotwist_connections_total", ())], 2)
        self.assertEqual(found[("echotwist_connections_active", ())], 1)
        self.assertEqual(
            found[("echotwist_bytes_echoed_total", (("transport", "tcp"),))], 10
        )
        self.assertEqual(
            found[("echotwist_bytes_echoed_total", (("transport", "unix"),))], 3
        )
        self.assertEqual(
            found[("echotwist_rejected_total", (("reason", "per-ip"),))], 1
        )
        self.assertEqual(
            found[("echotwist_udp_dropped_total", (("reason", "privileged-port"),))], 1
        )

    def test_rejectReasonsExistAtZero(self) -> None:
        """All four rejection reasons are exported before they happen."""
        found = samples(ServerStats())
        for reason in ("limit", "per-ip", "denied", "emfile"):
            self.assertEqual(
                found[("echotwist_rejected_total", (("reason", reason),))], 0
            )

    def test_dropReasonsExistAtZero(self) -> None:
        """Every UDP drop reason is exported before it happens."""
        found = samples(ServerStats())
        for reason in DROP_REASONS:
            self.assertEqual(
                found[("echotwist_udp_dropped_total", (("reason", reason),))], 0
            )

    def test_workerRestarts(self) -> None:
        """A worker exports how many times it was replaced; one process does not."""
        stats = ServerStats()
        self.assertNotIn(
            "echotwist_worker_restarts_total", {name for name, _ in samples(stats)}
        )
        stats.worker = 2
        stats.workerRestarts = 3
        self.assertEqual(
            samples(stats)[("echotwist_worker_restarts_total", (("worker", "2"),))], 3
        )

    def test_readsAtScrapeTime(self) -> None:
        """Counting after the registry is built shows in the next scrape."""
        stats = ServerStats()
        registry = metricsRegistry(stats)
        stats.connectionOpened()
        self.assertIn(b"echotwist_connections_total 1.0", generate_latest(registry))

    def test_durationHistogram(self) -> None:
        """Durations appear as cumulative buckets, sum and count."""
        stats = ServerStats()
        for seconds in (0.005, 0.5, 5000.0):
            stats.connectionOpened()
            stats.connectionClosed(seconds)
        found = samples(stats)
        name = "echotwist_connection_duration_seconds"
        self.assertEqual(found[(name + "_bucket", (("le", "0.01"),))], 1)
        self.assertEqual(found[(name + "_bucket", (("le", "1.0"),))], 2)
        self.assertEqual(found[(name + "_bucket", (("le", "+Inf"),))], 3)
        self.assertEqual(found[(name + "_count", ())], 3)
        self.assertEqual(found[(name + "_sum", ())], 5000.505)


class PageTests(SynchronousTestCase):
    """The web side: /metrics renders the text format."""

    def test_render(self) -> None:
        """GET /metrics returns the exposition with its content type."""
        stats = ServerStats()
        stats.echoed("tcp", 42)
        page = MetricsPage(metricsRegistry(stats))
        request = DummyRequest([b""])
        # DummyRequest provides IRequest without declaring it.
        body = page.render(cast(IRequest, request))
        self.assertIn(b'echotwist_bytes_echoed_total{transport="tcp"} 42.0', body)
        [contentType] = request.responseHeaders.getRawHeaders(b"content-type") or [b""]
        self.assertTrue(contentType.startswith(b"text/plain"))

    def test_siteRoutesMetrics(self) -> None:
        """The site has /metrics and nothing else at its root."""
        site = metricsSite(ServerStats())
        self.assertIsInstance(
            site.resource.getChildWithDefault(b"metrics", None), MetricsPage
        )

    def test_makeServiceAddsMetricsListener(self) -> None:
        """--metrics adds a listener logging 'Metrics on ...' to the service tree."""
        options, reactor = parse(
            "--listen=tcp:0", "--metrics=tcp:0:interface=127.0.0.1"
        )
        service = makeService(options)
        listeners = [c for c in service if isinstance(c, ListeningService)]
        self.assertEqual(
            [c.logFormat for c in listeners],
            ["Listening on {address}", "Metrics on {address}"],
        )
        # Starting takes over this process's signals; give them back after.
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        service.privilegedStartService()
        self.assertEqual(
            [(port, interface) for port, _, _, interface in reactor.tcpServers],
            [(0, ""), (0, "127.0.0.1")],
        )
