"""End-to-end: a forged datagram starts no UDP echo loop (issue 12).

The datagrams are forged with a raw socket, which needs root; those tests
skip without it.  Each waits for the drop's log line, which comes after
every reply the forged datagram caused, then reads the servers' metrics.
The guard still answers echotwist's own UDP ping, which repeats one word
with no pause at all.
"""

from __future__ import annotations

import socket
import struct

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from echotwist.test.e2e.harness import (
    ServerProcess,
    runClient,
    scrapeMetrics,
    startServer,
)

LOOPBACK = "127.0.0.1"
PAYLOAD = b"forged datagram"
ECHOED = 'echotwist_echoed_bytes_total{transport="udp"}'


def forge(source: tuple[str, int], destination: tuple[str, int], data: bytes) -> None:
    """Send one UDP datagram with a forged IPv4 source address and port, or skip."""
    udp = struct.pack("!HHHH", source[1], destination[1], 8 + len(data), 0) + data
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        socket.IPPROTO_UDP,
        # The kernel fills in the checksum; a UDP checksum of 0 means none.
        0,
        socket.inet_aton(source[0]),
        socket.inet_aton(destination[0]),
    )
    try:
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except PermissionError:
        raise SkipTest("forging a source address needs a raw socket (root)") from None
    with raw:
        raw.sendto(header + udp, (destination[0], 0))


def metricsServer(test: SynchronousTestCase) -> tuple[ServerProcess, str]:
    """A server on a UDP port of 127.0.0.1, with its metrics address."""
    server = startServer(
        test,
        "--metrics",
        "tcp:0:interface=127.0.0.1",
        udp=["udp:0:interface=127.0.0.1"],
    )
    metrics = server.output.waitFor(r"Metrics on (tcp:127\.0\.0\.1:\d+)").group(1)
    return server, metrics


class ForgedDatagramTests(SynchronousTestCase):
    """One forged datagram: at most one reply from each server, then none."""

    def test_fromItsOwnAddress(self) -> None:
        """Forged with the server's own address and port: no reply at all."""
        server, metrics = metricsServer(self)
        (port,) = server.udpPorts
        forge((LOOPBACK, port), (LOOPBACK, port), PAYLOAD)
        server.output.waitFor(
            rf"Dropped UDP datagram from 127\.0\.0\.1/{port}: own-address"
        )
        samples = scrapeMetrics(metrics)
        # A transport that echoed nothing has no sample.
        self.assertEqual(samples.get(ECHOED, 0), 0)
        self.assertEqual(
            samples['echotwist_udp_dropped_total{reason="own-address"}'], 1
        )

    def test_twoServersSetOnEachOther(self) -> None:
        """Forged from server B to server A: A replies once, B once, A drops."""
        a, metricsA = metricsServer(self)
        b, metricsB = metricsServer(self)
        forge((LOOPBACK, b.udpPorts[0]), (LOOPBACK, a.udpPorts[0]), PAYLOAD)
        a.output.waitFor(
            rf"Dropped UDP datagram from 127\.0\.0\.1/{b.udpPorts[0]}: reflected-echo"
        )
        samplesA, samplesB = scrapeMetrics(metricsA), scrapeMetrics(metricsB)
        self.assertEqual((samplesA[ECHOED], samplesB[ECHOED]), (len(PAYLOAD),) * 2)
        self.assertEqual(
            samplesA['echotwist_udp_dropped_total{reason="reflected-echo"}'], 1
        )


class PingTests(SynchronousTestCase):
    """echotwist's UDP ping is not taken for a loop."""

    def test_backToBack(self) -> None:
        """200 probes of one word with no interval are all answered, none dropped."""
        server, metrics = metricsServer(self)
        result = runClient(
            "--udp", "--count", "200", "--interval", "0",
            "127.0.0.1", "hello", str(server.udpPorts[0]),
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("200 probes sent, 200 received, 0.0% loss", result.stdout)
        samples = scrapeMetrics(metrics)
        self.assertEqual(
            samples['echotwist_udp_dropped_total{reason="reflected-echo"}'], 0
        )
