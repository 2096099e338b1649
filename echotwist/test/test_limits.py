"""Unit tests for L{echotwist.server.limits}: pure decisions, no reactor."""

from __future__ import annotations

import ipaddress

from twisted.trial.unittest import SynchronousTestCase

from echotwist.server.limits import (
    DENIED,
    LIMIT,
    PER_IP,
    AddressPolicy,
    ConnectionLimits,
    fileLimitTarget,
    idleSweepInterval,
    isIdle,
    parseAddress,
    parseNetwork,
)


def policy(allow: tuple[str, ...] = (), deny: tuple[str, ...] = ()) -> AddressPolicy:
    """An L{AddressPolicy} from network strings."""
    return AddressPolicy(
        [parseNetwork(a) for a in allow], [parseNetwork(d) for d in deny]
    )


class ParseTests(SynchronousTestCase):
    """Option values are parsed or rejected with a one-line reason."""

    def test_networks(self) -> None:
        """IPv4 and IPv6 networks and bare addresses parse."""
        self.assertEqual(parseNetwork("10.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8"))
        self.assertEqual(parseNetwork("2001:db8::/32").version, 6)
        self.assertEqual(parseNetwork("192.0.2.7").num_addresses, 1)

    def test_badNetworks(self) -> None:
        """Garbage and host bits below the prefix are errors naming the input."""
        for text in ("nonsense", "10.1.2.3/8", "10.0.0.0/33", ""):
            with self.assertRaises(ValueError) as caught:
                parseNetwork(text)
            self.assertIn(repr(text), str(caught.exception))
            self.assertNotIn("\n", str(caught.exception))

    def test_addresses(self) -> None:
        """Peer hosts parse; IPv4-mapped IPv6 becomes IPv4; names are not IPs."""
        self.assertEqual(parseAddress("::ffff:192.0.2.7"), parseAddress("192.0.2.7"))
        self.assertEqual(parseAddress("fe80::1%eth0"), ipaddress.ip_address("fe80::1"))
        self.assertIsNone(parseAddress("/run/echo.sock"))


class AddressPolicyTests(SynchronousTestCase):
    """--allow and --deny decide which clients are served."""

    def test_emptyPermitsAll(self) -> None:
        """Without rules every address is served."""
        self.assertTrue(policy().permits(parseAddress("203.0.113.9")))

    def test_denyWins(self) -> None:
        """An address both allowed and denied is denied."""
        rules = policy(allow=("10.0.0.0/8",), deny=("10.9.0.0/16",))
        self.assertTrue(rules.permits(parseAddress("10.1.2.3")))
        self.assertFalse(rules.permits(parseAddress("10.9.2.3")))

    def test_allowListIsExclusive(self) -> None:
        """Once an --allow is given, addresses outside it are refused."""
        rules = policy(allow=("127.0.0.0/8", "::1"))
        self.assertTrue(rules.permits(parseAddress("127.0.0.1")))
        self.assertTrue(rules.permits(parseAddress("::1")))
        self.assertFalse(rules.permits(parseAddress("192.0.2.1")))
        self.assertFalse(rules.permits(parseAddress("2001:db8::1")))

    def test_denyOnly(self) -> None:
        """Deny rules alone refuse their networks, IPv6 included, and serve others."""
        rules = policy(deny=("2001:db8::/32",))
        self.assertFalse(rules.permits(parseAddress("2001:db8::5")))
        self.assertTrue(rules.permits(parseAddress("2001:db9::5")))
        self.assertTrue(rules.permits(parseAddress("192.0.2.1")))

    def test_mappedAddressMatchesIPv4Rule(self) -> None:
        """A dual-stack listener's IPv4-mapped client matches IPv4 rules."""
        rules = policy(deny=("192.0.2.0/24",))
        self.assertFalse(rules.permits(parseAddress("::ffff:192.0.2.1")))

    def test_nonIpClientsExempt(self) -> None:
        """UNIX-socket clients (no IP address) are not subject to the rules."""
        self.assertTrue(policy(allow=("127.0.0.1",)).permits(None))


class ConnectionLimitsTests(SynchronousTestCase):
    """Admission control counts active connections in total and per IP."""

    def test_totalCap(self) -> None:
        """Past maxConnections clients are refused for 'limit' until one leaves."""
        limits = ConnectionLimits(maxConnections=2)
        self.assertIsNone(limits.admit("192.0.2.1"))
        self.assertIsNone(limits.admit("192.0.2.2"))
        self.assertEqual(limits.admit("192.0.2.3"), LIMIT)
        limits.release("192.0.2.1")
        self.assertIsNone(limits.admit("192.0.2.3"))
        self.assertEqual(limits.active, 2)

    def test_perIpCap(self) -> None:
        """Past maxPerIp from one address, 'per-ip'; other addresses unaffected."""
        limits = ConnectionLimits(maxConnections=0, maxPerIp=2)
        self.assertIsNone(limits.admit("192.0.2.1"))
        self.assertIsNone(limits.admit("::ffff:192.0.2.1"))
        self.assertEqual(limits.admit("192.0.2.1"), PER_IP)
        self.assertIsNone(limits.admit("192.0.2.2"))
        limits.release("192.0.2.1")
        self.assertIsNone(limits.admit("192.0.2.1"))

    def test_perIpTableEmptiesWhenClientsLeave(self) -> None:
        """The per-IP table holds only connected addresses (bounded memory)."""
        limits = ConnectionLimits(maxPerIp=3)
        for i in range(50):
            host = f"198.51.100.{i}"
            self.assertIsNone(limits.admit(host))
            limits.release(host)
        self.assertEqual((limits.active, len(limits.perIp)), (0, 0))

    def test_deniedBeforeCounting(self) -> None:
        """A denied client is 'denied' and takes no slot."""
        limits = ConnectionLimits(
            maxConnections=1, policy=policy(deny=("192.0.2.0/24",))
        )
        self.assertEqual(limits.admit("192.0.2.1"), DENIED)
        self.assertEqual(limits.active, 0)
        self.assertIsNone(limits.admit("198.51.100.1"))

    def test_unixClientsCountTowardsTotal(self) -> None:
        """Clients without a host count towards the total cap only."""
        limits = ConnectionLimits(maxConnections=1, maxPerIp=1)
        self.assertIsNone(limits.admit(None))
        self.assertEqual(limits.admit(None), LIMIT)
        limits.release(None)
        self.assertEqual(limits.active, 0)

    def test_zeroMeansNoLimit(self) -> None:
        """maxConnections=0 admits without bound."""
        limits = ConnectionLimits(maxConnections=0)
        for _ in range(20000):
            self.assertIsNone(limits.admit("192.0.2.1"))


class IdleTests(SynchronousTestCase):
    """Idleness is decided from when traffic was last seen."""

    def test_interval(self) -> None:
        """The shared check runs eight times per timeout."""
        self.assertEqual(idleSweepInterval(300), 37.5)

    def test_isIdle(self) -> None:
        """Idle once the whole timeout has passed since the last activity."""
        self.assertFalse(isIdle(now=103.9, lastActive=100, timeout=4))
        self.assertTrue(isIdle(now=104, lastActive=100, timeout=4))

    def test_positiveTimeout(self) -> None:
        """A zero timeout is 'off' and has no check interval."""
        self.assertRaises(ValueError, idleSweepInterval, 0)


class FileLimitTargetTests(SynchronousTestCase):
    """The soft open-file limit is raised as far as the connection limit needs."""

    def test_raisedToWhatIsNeeded(self) -> None:
        """10,000 connections on a soft limit of 1,024: raised to 10,064."""
        self.assertEqual(fileLimitTarget(10000, 1024, 20000), 10064)

    def test_cappedByHard(self) -> None:
        """Never above the hard limit; nothing to do when soft is already there."""
        self.assertEqual(fileLimitTarget(30000, 1024, 20000), 20000)
        self.assertIsNone(fileLimitTarget(30000, 48, 48))

    def test_neverLowered(self) -> None:
        """A soft limit already high enough (or unlimited) is left alone."""
        self.assertIsNone(fileLimitTarget(100, 1024, 20000))
        self.assertIsNone(fileLimitTarget(100, -1, -1))

    def test_noConnectionLimit(self) -> None:
        """With no connection limit, as many as the hard limit allows."""
        self.assertEqual(fileLimitTarget(0, 1024, 20000), 20000)
        self.assertIsNone(fileLimitTarget(0, 1024, -1))
