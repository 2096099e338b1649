"""Unit tests for L{echotwist.server.metrics}: the collector and the /metrics page."""

from __future__ import annotations

import platform
import signal
from pathlib import Path
from typing import cast

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest
from twisted.web.test.requesthelper import DummyRequest

import twisted
from echotwist import __version__
from echotwist.server.listening import ListeningService
from echotwist.server.metrics import (
    MetricsPage,
    QuietSite,
    metricsRegistry,
    metricsSite,
)
from echotwist.server.stats import ServerStats
from echotwist.server.udp import DROP_REASONS
from echotwist.tap import makeService
from echotwist.test.test_tap_hardening import parse

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(stats: ServerStats, proc: str = "no-proc-here") -> Samples:
    """Scrape C{stats} and index every sample by name and labels.

    The process's figures are read from C{proc}; by default there are none.
    """
    text = generate_latest(metricsRegistry(stats, proc)).decode("utf-8")
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
            found[("echotwist_echoed_bytes_total", (("transport", "tcp"),))], 10
        )
        self.assertEqual(
            found[("echotwist_echoed_bytes_total", (("transport", "unix"),))], 3
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


def fakeProc(directory: Path, openFiles: int) -> str:
    """A C{/proc} with this process's figures: 8 MiB resident (2048 pages
    of 4 KiB), C{openFiles} descriptors open of 1024 allowed.
    """
    own = directory / "self"
    (own / "fd").mkdir(parents=True)
    for number in range(openFiles):
        (own / "fd" / str(number)).touch()
    (directory / "stat").write_text("cpu 1 2 3\nbtime 1700000000\n")
    # Fields after the command: state, then 21 more up to rss, the 24th.
    fields = ["S", *["0"] * 18, "100", "123456789", "2048"]
    (own / "stat").write_text("4711 (twistd) " + " ".join(fields) + "\n")
    (own / "limits").write_text(
        "Limit                     Soft Limit           Hard Limit           Units\n"
        "Max open files            1024                 4096                 files\n"
    )
    return str(directory)


class ProcessAndBuildTests(SynchronousTestCase):
    """Beside the server's counters: the process's figures and the build."""

    def test_process(self) -> None:
        """Open descriptors, their limit and resident memory, from /proc."""
        found = samples(ServerStats(), fakeProc(Path(self.mktemp()), 3))
        self.assertEqual(found[("process_open_fds", ())], 3)
        self.assertEqual(found[("process_max_fds", ())], 1024)
        self.assertEqual(
            found[("process_resident_memory_bytes", ())], 2048 * pageSize()
        )

    def test_noProc(self) -> None:
        """Without /proc (not Linux) there are no process figures, and no error."""
        self.assertFalse(
            [name for name, _ in samples(ServerStats()) if name.startswith("process_")]
        )

    def test_buildInfo(self) -> None:
        """echotwist_build_info is 1, labelled with the versions running."""
        labels = (
            ("python", platform.python_version()),
            ("twisted", twisted.__version__),
            ("version", __version__),
        )
        self.assertEqual(samples(ServerStats())[("echotwist_build_info", labels)], 1)


def pageSize() -> int:
    """The page size the process collector counts resident memory in."""
    import resource

    return resource.getpagesize()


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
        self.assertIn(b'echotwist_echoed_bytes_total{transport="tcp"} 42.0', body)
        [contentType] = request.responseHeaders.getRawHeaders(b"content-type") or [b""]
        self.assertTrue(contentType.startswith(b"text/plain"))

    def test_siteRoutesMetrics(self) -> None:
        """The site has /metrics and nothing else at its root, and no access
        log (e2e: test_loglevels).
        """
        site = metricsSite(ServerStats())
        self.assertIsInstance(site, QuietSite)
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
