"""Parsing and checking of listening-endpoint descriptions (no I/O)."""

from __future__ import annotations

import re

from twisted.internet.interfaces import IAddress

DEFAULT_PORT = 5000

# Where each endpoint type takes its TCP port: the index of the positional
# argument that is the port (it may also be given as port=).  Twisted's
# tls:PATH[:PORT] names a directory of PEM files first, and its port
# defaults to 443.
_PORT_ARGUMENT = {"tcp": 0, "tcp6": 0, "ssl": 0, "tls": 1, "aiotcp": 0}
_PORT_DEFAULTED = frozenset({"tls"})
_UNESCAPED_COLON = re.compile(r"(?<!\\):")


class BadEndpoint(ValueError):
    """A listening description that cannot be used; the message says why."""


def _checkedNumber(text: str, name: str, highest: int) -> int:
    """C{text} as a number from 0 to C{highest}, or L{BadEndpoint} naming C{name}."""
    try:
        number = int(text, 10)
    except ValueError:
        raise BadEndpoint(f"invalid {name} {text!r}: not a number") from None
    if not 0 <= number <= highest:
        raise BadEndpoint(f"invalid {name} {text!r}: must be 0 to {highest}")
    return number


def checkPort(text: str) -> int:
    """Return C{text} as a TCP/UDP port number, or raise L{BadEndpoint}."""
    return _checkedNumber(text, "port", 65535)


def checkBacklog(text: str) -> int:
    """Return C{text} as a listen backlog, or raise L{BadEndpoint}.

    The kernel caps the backlog at C{net.core.somaxconn} anyway; beyond
    65535 C{listen()} would overflow rather than cap.
    """
    return _checkedNumber(text, "backlog", 65535)


def normalizeListen(text: str) -> str:
    """Turn a C{--port}/C{--listen} value into an endpoint description.

    A bare number is a TCP port on every IPv4 address (C{"5000"} becomes
    C{"tcp:5000"}; bare numbers stopped being endpoint descriptions in
    Twisted 17.1), and C{tls:} is another name for the C{ssl:} server.
    Anything else must be an endpoint description; for the types that
    take a port, the port is range-checked here because Twisted only
    notices a bad one when it binds.
    """
    text = text.strip()
    if not text:
        raise BadEndpoint("empty endpoint description")
    if ":" not in text:
        if text.lstrip("-").isdigit():
            return f"tcp:{checkPort(text)}"
        raise BadEndpoint(
            f"invalid port {text!r}: give a number or an endpoint description"
            " such as tcp:5000, tcp6:5000 or unix:/path"
        )
    kind, *args = _UNESCAPED_COLON.split(text)
    index = _PORT_ARGUMENT.get(kind)
    if index is not None:
        positional = [a for a in args if "=" not in a]
        keywords = dict(a.split("=", 1) for a in args if "=" in a)
        port = keywords.get(
            "port", positional[index] if len(positional) > index else None
        )
        if port is not None:
            checkPort(port)
        elif kind not in _PORT_DEFAULTED:
            raise BadEndpoint(f"{text!r}: no port given")
    return text


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
