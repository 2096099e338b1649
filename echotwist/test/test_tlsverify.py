"""Tests for L{echotwist.client.tlsverify}: the host must be in the subjectAltName.

Certificates are made in memory; the verify callback is called as
OpenSSL would call it, with a stand-in for Twisted's TLS protocol.
"""

from __future__ import annotations

import datetime
import ipaddress
from typing import cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL.crypto import X509
from OpenSSL.SSL import TLS_METHOD, Connection, Context
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echotwist.client.connect import describeConnectionError
from echotwist.client.tlsverify import (
    CertificateRejected,
    identityProblem,
    verifyCallback,
)


def certificate(*names: x509.GeneralName) -> X509:
    """A self-signed certificate for C{localhost} with C{names} as its
    subjectAltName (none: no such extension).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(list(names)), critical=False
        )
    return X509.from_cryptography(builder.sign(key, hashes.SHA256()))


class FakeTLSProtocol:
    """Records the reasons L{TLSMemoryBIOProtocol.failVerification} is given."""

    def __init__(self) -> None:
        self.reasons: list[Failure] = []

    def failVerification(self, reason: Failure) -> None:
        """Record C{reason}."""
        self.reasons.append(reason)


LOCALHOST = x509.DNSName("localhost")
LOOPBACK = x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))


class IdentityTests(SynchronousTestCase):
    """L{identityProblem}: only a subjectAltName names a host."""

    def test_named(self) -> None:
        """A host name or address in the subjectAltName is accepted."""
        cert = certificate(LOCALHOST, LOOPBACK)
        self.assertIsNone(identityProblem(cert, "localhost"))
        self.assertIsNone(identityProblem(cert, "127.0.0.1"))

    def test_noSubjectAltName(self) -> None:
        """A certificate naming its host only as commonName is refused."""
        self.assertEqual(
            identityProblem(certificate(), "localhost"),
            "the server's certificate has no subjectAltName, which must name localhost",
        )

    def test_otherHost(self) -> None:
        """A certificate for another name or address is refused."""
        cert = certificate(LOCALHOST, LOOPBACK)
        for host in ("example.com", "127.0.0.2"):
            self.assertEqual(
                identityProblem(cert, host),
                f"the server's certificate is not for {host}",
            )


class CallbackTests(SynchronousTestCase):
    """L{verifyCallback} as OpenSSL calls it, once per certificate in the chain."""

    def setUp(self) -> None:
        """A stand-in TLS protocol and a connection to pass the callback."""
        self.protocol = FakeTLSProtocol()
        # The callback's caller passes the connection; it is not used.
        self.connection = Connection(Context(TLS_METHOD), None)

    def verify(self, cert: X509, depth: int, ok: int) -> bool:
        """Call a new callback for C{localhost} with C{cert}."""
        callback = verifyCallback(
            cast(TLSMemoryBIOProtocol, self.protocol), "localhost"
        )
        return callback(self.connection, cert, 0, depth, ok)

    def test_noSubjectAltName(self) -> None:
        """A trusted certificate without subjectAltName fails the handshake."""
        self.assertFalse(self.verify(certificate(), 0, 1))
        [reason] = self.protocol.reasons
        self.assertTrue(reason.check(CertificateRejected))
        self.assertEqual(
            describeConnectionError(reason),
            "TLS certificate verification failed: the server's certificate has"
            " no subjectAltName, which must name localhost (--insecure skips it)",
        )

    def test_accepted(self) -> None:
        """A trusted certificate naming the host passes, with no reason given."""
        self.assertTrue(self.verify(certificate(LOCALHOST), 0, 1))
        self.assertEqual(self.protocol.reasons, [])

    def test_untrustedChain(self) -> None:
        """OpenSSL's verdict on the chain stands, at any depth."""
        self.assertFalse(self.verify(certificate(LOCALHOST), 0, 0))
        self.assertFalse(self.verify(certificate(), 1, 0))
        self.assertTrue(self.verify(certificate(), 1, 1))
        self.assertEqual(self.protocol.reasons, [])
