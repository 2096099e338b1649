"""The server's certificate under C{--tls}: trusted, and naming the host.

Twisted's C{optionsForClientTLS} checks the host name in its OpenSSL
verify callback with service_identity, but catches only
C{VerificationError} there.  service_identity raises C{CertificateError}
for a certificate without a subjectAltName (it dropped the commonName
fallback in 23.1), and Twisted's callback logs that as a traceback and
returns what the chain check said: a trusted certificate that names no
host at all was accepted (Twisted 26.10, service_identity 26.1), and an
untrusted one failed after a traceback.

L{HostVerifyingCreator} keeps what Twisted's connection creator sets up
(the platform's trust roots, the server name sent) and replaces that
callback with one that refuses, with a reason, every certificate that
does not name the host in its subjectAltName (L{identityProblem}).

Needs the C{tls} extra (pyOpenSSL and service_identity): importing this
module without it raises C{ImportError}.
"""

from __future__ import annotations

from collections.abc import Callable

from OpenSSL.crypto import X509
from OpenSSL.SSL import VERIFY_FAIL_IF_NO_PEER_CERT, VERIFY_PEER, Connection
from service_identity.exceptions import CertificateError, VerificationError
from service_identity.hazmat import (
    DNS_ID,
    IPAddress_ID,
    ServiceID,
    verify_service_identity,
)
from service_identity.pyopenssl import extract_patterns
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import optionsForClientTLS
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer


class CertificateRejected(Exception):
    """The server's certificate does not name the host it was reached as."""


# What an OpenSSL verify callback is given: the connection, the
# certificate, the error number, its depth in the chain (0: the server's
# own) and whether OpenSSL found the chain valid so far.
VerifyCallback = Callable[[Connection, X509, int, int, int], bool]


def serviceID(host: str) -> ServiceID:
    """What C{host} must be in the certificate: a DNS name or an IP address."""
    if isIPAddress(host) or isIPv6Address(host):
        return IPAddress_ID(host)
    return DNS_ID(host)


def identityProblem(certificate: X509, host: str) -> str | None:
    """Why C{certificate} is not one for C{host}, or None if it is.

    Only a subjectAltName counts (RFC 6125; service_identity): a
    certificate without one names no host, whatever its commonName says.
    """
    try:
        patterns = extract_patterns(certificate)
    except CertificateError as e:
        return f"the server's certificate has an unusable subjectAltName ({e})"
    if not patterns:
        return f"the server's certificate has no subjectAltName, which must name {host}"
    try:
        verify_service_identity(patterns, [serviceID(host)], [])
    except (VerificationError, CertificateError):
        return f"the server's certificate is not for {host}"
    return None


def verifyCallback(tlsProtocol: TLSMemoryBIOProtocol, host: str) -> VerifyCallback:
    """An OpenSSL verify callback that also requires the certificate to name
    C{host}, failing C{tlsProtocol}'s handshake with L{CertificateRejected}
    (the reason its protocol's C{connectionLost} sees) when it does not.
    """
    protocol: TLSMemoryBIOProtocol | None = tlsProtocol

    def verify(
        connection: Connection, certificate: X509, errno: int, depth: int, ok: int
    ) -> bool:
        nonlocal protocol
        # The chain is OpenSSL's to judge (its error ends the handshake);
        # the name is checked on the server's own certificate, at depth 0.
        if depth != 0 or not ok:
            return bool(ok)
        problem = identityProblem(certificate, host)
        if problem is not None and protocol is not None:
            protocol.failVerification(Failure(CertificateRejected(problem)))
        # The connection holds this callback: no cycle back to the protocol.
        protocol = None
        return problem is None

    return verify


@implementer(IOpenSSLClientConnectionCreator)
class HostVerifyingCreator:
    """Twisted's client connection creator for C{host}, with the host name
    checked by L{verifyCallback}.
    """

    def __init__(
        self, host: str, creator: IOpenSSLClientConnectionCreator | None = None
    ) -> None:
        self.host = host
        self.creator = creator if creator is not None else optionsForClientTLS(host)

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> Connection:
        """Twisted's connection, verifying with L{verifyCallback}."""
        connection = self.creator.clientConnectionForTLS(tlsProtocol)
        connection.set_verify(
            VERIFY_PEER | VERIFY_FAIL_IF_NO_PEER_CERT,
            verifyCallback(tlsProtocol, self.host),
        )
        return connection
