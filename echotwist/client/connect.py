"""What the one-shot client and ping share: reaching the server, naming failures.

L{streamEndpoint} builds the TCP or TLS endpoint (after L{checkHostName});
the rest turns what went wrong into the one line the user sees: why a
connection could not be made or ended early, and how an echo differed
from what was sent.  Nothing here connects by itself.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.defer import Deferred, TimeoutError, fail
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
    NoRouteError,
    TCPTimedOutError,
    UnknownHostError,
)
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTCP,
    IStreamClientEndpoint,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from echotwist.endpoints import formatHostPort


class EchoError(Exception):
    """The echo failed; the message is the one line shown to the user."""


# The error of --tls without the tls extra (pyOpenSSL, service_identity).
TLS_MISSING = "--tls needs pyOpenSSL: pip install 'echotwist[tls]'"


@implementer(IStreamClientEndpoint)
class UnusableEndpoint:
    """An endpoint that cannot connect, for a reason known in advance.

    Every C{connect} fails with L{EchoError}(C{why}), so the caller reports
    it as it reports any connection that could not be made: one line.
    """

    def __init__(self, why: str) -> None:
        self.why = why

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """Fail at once with L{EchoError}."""
        return fail(EchoError(self.why))


def checkHostName(host: str) -> None:
    """Raise L{DNSLookupError} for a name no resolver could look up.

    An empty or over-long label, or a character IDNA cannot encode, would
    otherwise fail inside the resolver with an unhandled C{UnicodeError}.
    """
    try:
        host.encode("idna")
    except UnicodeError:
        raise DNSLookupError(host) from None


def streamEndpoint(
    reactor: IReactorTCP,
    host: str,
    port: int,
    timeout: float,
    *,
    tls: bool = False,
    insecure: bool = False,
) -> IStreamClientEndpoint:
    """The endpoint to reach C{host}:C{port}, over TLS if asked.

    Host names and IPv4/IPv6 literals are accepted (L{HostnameEndpoint}).
    With C{insecure} the server's certificate is not verified; otherwise
    it must be valid under the platform's trust roots and name C{host} in
    its subjectAltName (L{echotwist.client.tlsverify}).  Without the
    C{tls} extra, a TLS endpoint is an L{UnusableEndpoint} saying
    L{TLS_MISSING}.

    @raise DNSLookupError: C{host} is no name a resolver could look up.
    """
    checkHostName(host)
    endpoint: IStreamClientEndpoint = HostnameEndpoint(
        reactor, host, port, timeout=timeout
    )
    if not tls:
        return endpoint
    try:
        creator = tlsCreator(host, insecure)
    except ImportError:
        return UnusableEndpoint(TLS_MISSING)
    return wrapClientTLS(creator, endpoint)


def tlsCreator(host: str, insecure: bool) -> IOpenSSLClientConnectionCreator:
    """The TLS connection creator for C{host}; raise C{ImportError} without
    the C{tls} extra.
    """
    # Imported only for --tls, so that the client runs without pyOpenSSL.
    from twisted.internet import ssl

    if insecure:
        # CertificateOptions (verify=False by default) is a context factory;
        # TLSMemoryBIOFactory adapts it to a connection creator itself, but
        # wrapClientTLS's annotation names only the newer interface.
        return cast(IOpenSSLClientConnectionCreator, ssl.CertificateOptions())
    from echotwist.client.tlsverify import HostVerifyingCreator

    return HostVerifyingCreator(host)


def describeConnectionError(reason: Failure) -> str:
    """Name why a connection ended, a failed TLS handshake in plain words."""
    # By name, as tlsverify (and so pyOpenSSL) may not be importable.
    if reason.check("echotwist.client.tlsverify.CertificateRejected"):
        return (
            f"TLS certificate verification failed: {reason.value} (--insecure skips it)"
        )
    # By name, so that pyOpenSSL (the tls extra) need not be importable.
    if reason.check("OpenSSL.SSL.Error"):
        detail = str(reason.value)
        if "certificate verify failed" in detail:
            return "TLS certificate verification failed (--insecure skips it)"
        return f"TLS handshake failed: {detail}"
    return reason.getErrorMessage() or type(reason.value).__name__


def endedEarly(reason: Failure, count: int, expected: int) -> str:
    """Why an echo ended after C{count} of C{expected} bytes came back.

    A clean close or a reset says the server closed it; anything else (a
    failed TLS handshake, say) is named by L{describeConnectionError}.
    """
    if reason.check(ConnectionDone, ConnectionLost):
        why = f"the server closed the connection after {count} of {expected} bytes"
        if reason.check(ConnectionLost):
            why += " (reset)"
        return why
    return (
        f"the connection failed after {count} of {expected} bytes:"
        f" {describeConnectionError(reason)}"
    )


def echoDiffers(echoed: bytes, sent: bytes) -> str:
    """C{echo differs from what was sent (N bytes back for M sent)}.

    A phrase without an article: ping's loss line puts it after the probe's
    sequence number, the one-shot client's error line after C{the}.
    """
    return (
        f"echo differs from what was sent ({len(echoed)} bytes back"
        f" for {len(sent)} sent)"
    )


def describeFailure(failure: Failure, host: str, port: int, timeout: float) -> str:
    """Turn why an echo (or ping's first connection) failed into one line."""
    where = formatHostPort(host, port)
    if failure.check(EchoError):
        return str(failure.value)
    if failure.check(ConnectionRefusedError):
        return f"connection refused by {where}"
    if failure.check(DNSLookupError, UnknownHostError):
        return f"unknown host {host!r}"
    if failure.check(TimeoutError, TCPTimedOutError, ConnectTimeoutError):
        return f"no echo from {where} within {timeout:g} s"
    if failure.check(NoRouteError):
        return f"no route to {where}"
    return f"cannot echo with {where}: {failure.getErrorMessage()}"
