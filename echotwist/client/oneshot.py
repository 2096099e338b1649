"""The one-shot echo: send one message, read its echo back, done.

The seed's C{TCPEchoClient4} in Twisted: L{EchoClientFactory} makes one
L{EchoClient}, which sends the message, reads until exactly as many bytes
have come back (an echo may arrive in pieces) and closes; the factory's
Deferred then fires, and C{task.react} stops the reactor.  L{echoOver}
bounds the whole exchange in time; L{udpEcho} does the same with one
datagram.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.python.failure import Failure

from echotwist.client.connect import EchoError, echoDiffers, endedEarly, streamEndpoint
from echotwist.client.ping import Prober


def differs(echoed: bytes, sent: bytes) -> EchoError:
    """The one-shot client's error for an echo that is not what was sent."""
    return EchoError(f"the {echoDiffers(echoed, sent)}")


class EchoClient(Protocol):
    """Send one message and collect exactly as many bytes back."""

    factory: EchoClientFactory

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.count = 0

    def connectionMade(self) -> None:
        """Send the message; an empty one is already fully echoed."""
        assert self.transport is not None
        message = self.factory.message
        if message:
            self.transport.write(message)
        else:
            self._finish()

    def dataReceived(self, data: bytes) -> None:
        """Collect echoed bytes until as many as were sent are back."""
        self.received.append(data)
        self.count += len(data)
        if self.count >= len(self.factory.message):
            self._finish()

    def _finish(self) -> None:
        echoed = b"".join(self.received)
        assert self.transport is not None
        self.transport.loseConnection()
        expected = self.factory.message
        if echoed != expected:
            self.factory.echoFailed(differs(echoed, expected))
        else:
            self.factory.echoDone(echoed)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Report a connection that ended before the whole echo came back."""
        why = endedEarly(reason, self.count, len(self.factory.message))
        self.factory.echoFailed(EchoError(why))


class EchoClientFactory(ClientFactory[EchoClient]):
    """Make one L{EchoClient} for C{message}; C{deferred} fires with the echo.

    C{deferred} fires once: with the echoed bytes, or with an
    L{EchoError} (or the connection failure) when the echo fails.
    """

    protocol = EchoClient
    noisy = False

    def __init__(self, message: bytes) -> None:
        self.message = message
        self.deferred: Deferred[bytes] = Deferred()
        self.connected: EchoClient | None = None

    def buildProtocol(self, addr: IAddress | None) -> EchoClient | None:
        """Build the one L{EchoClient} and remember it."""
        self.connected = super().buildProtocol(addr)
        return self.connected

    def echoDone(self, echoed: bytes) -> None:
        """Fire C{deferred} with the echo, unless it already fired."""
        if not self.deferred.called:
            self.deferred.callback(echoed)

    def echoFailed(self, error: Exception | Failure) -> None:
        """Fire C{deferred} with C{error}, unless it already fired."""
        if not self.deferred.called:
            self.deferred.errback(error)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        """The connection could not be made (C{connectTCP} users)."""
        self.echoFailed(reason)


def echo(
    reactor: IReactorTime,
    host: str,
    port: int,
    message: bytes,
    timeout: float,
    *,
    endpoint: IStreamClientEndpoint | None = None,
) -> Deferred[bytes]:
    """Connect to C{host}:C{port}, echo C{message}, return the echoed bytes.

    Host names and IPv4/IPv6 literals are accepted (L{HostnameEndpoint}).
    The whole exchange, connecting included, must finish within C{timeout}
    seconds, or the result fails with L{TimeoutError}.  C{endpoint}, when
    given, is how to connect (a TLS endpoint, say); by default plain TCP.
    """
    if endpoint is None:
        endpoint = streamEndpoint(cast(IReactorTCP, reactor), host, port, timeout)
    return echoOver(reactor, endpoint, message, timeout)


def echoOver(
    clock: IReactorTime,
    endpoint: IStreamClientEndpoint,
    message: bytes,
    timeout: float,
) -> Deferred[bytes]:
    """Echo C{message} over a connection from C{endpoint}, within C{timeout} s.

    On timeout the connection attempt is cancelled, or the connection
    aborted, and the result fails with L{TimeoutError}.
    """
    factory = EchoClientFactory(message)
    connecting = endpoint.connect(factory)
    connecting.addErrback(factory.echoFailed)

    def cancel(d: Deferred[bytes]) -> None:
        # Fail with CancelledError first, so that addTimeout turns it into
        # TimeoutError; the connection attempt's own cancellation error
        # that follows is then ignored.
        factory.echoFailed(CancelledError())
        connecting.cancel()
        protocol = factory.connected
        if protocol is not None and protocol.transport is not None:
            cast(ITCPTransport, protocol.transport).abortConnection()

    result: Deferred[bytes] = Deferred(cancel)
    factory.deferred.chainDeferred(result)
    return result.addTimeout(timeout, clock)


async def udpEcho(
    clock: IReactorTime, prober: Prober, message: bytes, timeout: float
) -> bytes:
    """Echo C{message} as one datagram; the reply must match within C{timeout}.

    C{prober} (a L{echotwist.client.ping.DatagramProber}) sends it: over
    UDP a one-shot echo is a single probe.  Getting ready (resolving the
    host) and the echo each have C{timeout} seconds; C{prober} is closed
    in any case.
    """
    try:
        await prober.ready().addTimeout(timeout, clock)
        echoed = await prober.probe(message).addTimeout(timeout, clock)
    finally:
        prober.close()
    if echoed != message:
        raise differs(echoed, message)
    return echoed
