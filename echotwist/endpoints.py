"""Parsing and checking of listening-endpoint descriptions and hosts (no I/O).

L{splitDescription} is the one place a description such as
C{tcp:5000:interface=127.0.0.1} is taken apart; every other reader of
descriptions (the options, the workers, UDP) asks it.  L{parseHost} and
L{formatHostPort} are how the client and the load generator read a host
and show it with a port.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from twisted.internet.abstract import isIPv6Address
from twisted.internet.interfaces import IAddress

from echotwist import parsing

T = TypeVar("T")

DEFAULT_PORT = 5000
# Every listener without a backlog= gets the system's largest, as the
# workers' sockets do: with Twisted's default of 50, a burst of 500
# connects took 7 to 9 s.
DEFAULT_BACKLOG = socket.SOMAXCONN

# Where each listening type takes the arguments echotwist reads, by
# position as its parser declares them (each may also be given as
# NAME=VALUE): Twisted's _parseTCP(port, interface, backlog), tcp6's
# (port, backlog, interface), _parseSSL(port, privateKey, certKey,
# sslmethod, interface, backlog), tls's (path, port, backlog, interface),
# _parseUNIX(address, mode, backlog, lockfile) and systemd's (domain,
# index), and echotwist.internals.aiotcp's (port, interface, backlog).
# These are the types whose descriptions are checked; Twisted finds
# plugin types in any case, so they are given in lower case.
_POSITIONS: dict[str, dict[str, int]] = {
    "tcp": {"port": 0, "interface": 1, "backlog": 2},
    "tcp6": {"port": 0, "backlog": 1, "interface": 2},
    "ssl": {"port": 0, "interface": 4, "backlog": 5},
    "tls": {"port": 1, "backlog": 2, "interface": 3},
    "unix": {"mode": 1, "backlog": 2, "lockfile": 3},
    "aiotcp": {"port": 0, "interface": 1, "backlog": 2},
    "systemd": {"index": 1},
}
# Twisted's tls:PATH[:PORT] listens on port 443 when given none.
_PORT_DEFAULTED = frozenset({"tls"})
# haproxy:DESCRIPTION reads a PROXY header at the start of each connection
# of the listener it wraps (echotwist.internals.proxyheader).  Not around
# TLS: a proxy sends the header before the TLS handshake, where ssl: and
# tls: would look for it inside.
PROXIED = "haproxy"
_NOT_PROXIED = frozenset({"ssl", "tls"})


class BadEndpoint(ValueError):
    """A listening description that cannot be used; the message says why."""


@dataclass(frozen=True)
class Description:
    r"""An endpoint description taken apart: its kind and its arguments.

    Arguments are unescaped (C{\\:} becomes C{:}); C{keywords} holds the
    C{NAME=VALUE} ones, C{positional} the others, in order.
    """

    kind: str
    positional: list[str] = field(default_factory=list)
    keywords: dict[str, str] = field(default_factory=dict)

    def argument(self, name: str, index: int) -> str | None:
        """The argument given as C{name=} or else at C{index}, if any."""
        if name in self.keywords:
            return self.keywords[name]
        return self.positional[index] if len(self.positional) > index else None


def splitDescription(text: str) -> Description:
    r"""Take C{KIND:ARG:NAME=VALUE...} apart as Twisted's parser does.

    Arguments are separated by colons, and the first C{=} in one names it;
    a backslash makes the character after it plain (C{\:} is a colon
    inside an argument, C{\\} a backslash).

    @raise BadEndpoint: C{text} ends in a lone backslash, which escapes
        nothing (Twisted's own parser fails on it with a bare
        C{generator raised StopIteration}).
    """
    fields: list[tuple[str | None, str]] = []
    name: str | None = None
    current: list[str] = []
    characters = iter(text)
    for character in characters:
        if character == "\\":
            escaped = next(characters, None)
            if escaped is None:
                raise BadEndpoint(
                    f"invalid endpoint {text!r}: it ends in a lone backslash"
                    " (a backslash escapes the next character; \\\\ is one"
                    " backslash)"
                )
            current.append(escaped)
        elif character == ":":
            fields.append((name, "".join(current)))
            name, current = None, []
        elif character == "=" and name is None:
            name, current = "".join(current), []
        else:
            current.append(character)
    fields.append((name, "".join(current)))
    (kindName, kind), *arguments = fields
    if kindName is not None:
        kind = f"{kindName}={kind}"
    positional = [value for key, value in arguments if key is None]
    keywords = {key: value for key, value in arguments if key is not None}
    return Description(kind, positional, keywords)


def _checked(parse: Callable[[str], T], text: str) -> T:
    """C{parse(text)}, its C{ValueError} raised as L{BadEndpoint}."""
    try:
        return parse(text)
    except ValueError as e:
        raise BadEndpoint(str(e)) from None


def checkPort(text: str) -> int:
    """Return C{text} as a TCP/UDP port to listen on, or raise L{BadEndpoint}."""
    return _checked(parsing.parseListenPort, text)


def checkBacklog(text: str) -> int:
    """Return C{text} as a listen backlog (1 to 65535), or raise L{BadEndpoint}."""
    return _checked(parsing.parseBacklog, text)


# The numbers Twisted's parsers read with int(), which would take other
# scripts' digits and underscores, and ports and backlogs that Twisted
# would only find bad when it listens (or never: a negative backlog).
_NUMBERS: dict[str, Callable[[str], int]] = {
    "port": parsing.parseListenPort,
    "backlog": parsing.parseBacklog,
    "mode": parsing.parseFileMode,
    "lockfile": lambda text: parsing.parseWhole(text, "lockfile", 0, 1),
    "index": lambda text: parsing.parseCount(text, "systemd index"),
}


def listenArgument(description: Description, name: str) -> str | None:
    """The argument C{name} (such as C{interface} or C{backlog}) of a
    listening description, given as C{name=} or at the position its
    type's parser takes it in; C{None} if not given.
    """
    position = _POSITIONS.get(description.kind.lower(), {}).get(name)
    if position is None:
        return description.keywords.get(name)
    return description.argument(name, position)


def normalizeListen(text: str) -> str:
    """Turn a C{--port}/C{--listen} value into an endpoint description.

    A bare number is a TCP port on every IPv4 address (C{"5000"} becomes
    C{"tcp:5000"}; bare numbers stopped being endpoint descriptions in
    Twisted 17.1).  Anything else must be an endpoint description; the
    type is given in lower case if it is one echotwist knows.  Every
    number Twisted would read with C{int()} is checked here with
    L{echotwist.parsing}: ports (Twisted only notices a bad one when it
    binds), backlogs (1 to 65535), a C{unix:} socket's C{mode=} and
    C{lockfile=}, a C{systemd:} C{index=}.  A listener of a type that
    takes a backlog (C{tcp:}, C{tcp6:}, C{ssl:}, C{tls:}, C{unix:},
    C{aiotcp:}) and is given none gets C{:backlog=}L{DEFAULT_BACKLOG}
    appended.  C{haproxy:DESCRIPTION} (PROXY protocol) is C{haproxy:}
    followed by DESCRIPTION normalised so, which may not be C{ssl:},
    C{tls:} or another C{haproxy:}.

    @raise BadEndpoint: saying what is wrong, in one line.
    """
    text = text.strip()
    if not text:
        raise BadEndpoint("empty endpoint description")
    if ":" not in text:
        if text.lstrip("-").isdigit():
            return f"tcp:{checkPort(text)}:backlog={DEFAULT_BACKLOG}"
        raise BadEndpoint(
            f"invalid port {text!r}: give a number or an endpoint description"
            " such as tcp:5000, tcp6:5000 or unix:/path"
        )
    inner = proxiedDescription(text)
    if inner is not None:
        return f"{PROXIED}:{_normalizeProxied(text, inner)}"
    description = splitDescription(text)
    kind = description.kind.lower()
    if kind not in _POSITIONS:
        return text
    text = kind + text[text.index(":") :]
    positions = _POSITIONS[kind]
    if (
        "port" in positions
        and kind not in _PORT_DEFAULTED
        and listenArgument(description, "port") is None
    ):
        raise BadEndpoint(f"{text!r}: no port given")
    for name, parse in _NUMBERS.items():
        value = listenArgument(description, name) if name in positions else None
        if value is not None:
            _checked(parse, value)
    if "backlog" in positions and listenArgument(description, "backlog") is None:
        return f"{text}:backlog={DEFAULT_BACKLOG}"
    return text


def proxiedDescription(text: str) -> str | None:
    """The description a C{haproxy:DESCRIPTION} listener wraps; C{None}
    for any other listener.
    """
    kind, _, inner = text.partition(":")
    return inner if kind.lower() == PROXIED else None


def _normalizeProxied(text: str, inner: str) -> str:
    """L{normalizeListen} of the listener C{haproxy:} wraps in C{text}."""
    if not inner.strip():
        raise BadEndpoint(
            f"{text!r}: haproxy: needs the listener it wraps, such as haproxy:tcp:7008"
        )
    kind = splitDescription(inner.strip()).kind.lower()
    if kind == PROXIED:
        raise BadEndpoint(
            f"{text!r}: haproxy: cannot wrap another haproxy: (a connection"
            " has one PROXY header)"
        )
    if kind in _NOT_PROXIED:
        raise BadEndpoint(
            f"{text!r}: haproxy: cannot wrap {kind}: (a proxy sends the PROXY"
            " header before any TLS handshake; let the proxy end TLS and wrap"
            " tcp:, tcp6:, unix: or systemd:)"
        )
    return normalizeListen(inner)


def formatAddress(address: IAddress) -> str:
    """Describe a bound address the way a user would type it back.

    C{IPv4Address(TCP, '0.0.0.0', 5000)} becomes C{tcp:0.0.0.0:5000},
    an IPv6 one C{tcp6:[::]:5000}, a UNIX one C{unix:/path}.
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    kind = str(getattr(address, "type", "tcp")).lower()
    if host is not None and port is not None:
        if ":" in str(host):
            return (
                f"{kind}6:[{host}]:{port}"
                if kind == "tcp"
                else f"{kind}:[{host}]:{port}"
            )
        return f"{kind}:{host}:{port}"
    name = getattr(address, "name", None)
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    if name is not None:
        return f"unix:{name}"
    return repr(address)


def formatListening(description: str, address: IAddress) -> str:
    """L{formatAddress} of a listener's bound C{address}, C{haproxy:} first
    when its C{description} reads PROXY headers.
    """
    name = formatAddress(address)
    return f"{PROXIED}:{name}" if proxiedDescription(description) is not None else name


def parseHost(text: str) -> str:
    """A host as typed on a command line: a name or an address.

    An IPv6 address may be given in brackets, as in a URL (C{[::1]}); the
    brackets are taken off.

    @raise ValueError: C{invalid host 'TEXT': ...} for a bracket without
        its pair, or brackets around anything but an IPv6 address.
    """
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if "[" in inner or "]" in inner or (inner is not text and not isIPv6Address(inner)):
        raise ValueError(
            f"invalid host {text!r}: brackets enclose an IPv6 address only"
        )
    return inner


def formatHostPort(host: str, port: int) -> str:
    """C{HOST:PORT}, with an IPv6 address in brackets (C{[::1]:7})."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
