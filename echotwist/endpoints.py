"""Parsing and checking of listening-endpoint descriptions (no I/O).

L{splitDescription} is the one place a description such as
C{tcp:5000:interface=127.0.0.1} is taken apart; every other reader of
descriptions (the options, the workers, UDP) asks it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from twisted.internet.interfaces import IAddress

from echotwist import parsing

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
    """Take C{KIND:ARG:NAME=VALUE...} apart at its unescaped colons."""
    kind, *arguments = _UNESCAPED_COLON.split(text)
    positional = []
    keywords = {}
    for argument in arguments:
        name, equals, value = argument.partition("=")
        if equals:
            keywords[name] = value.replace("\\:", ":")
        else:
            positional.append(argument.replace("\\:", ":"))
    return Description(kind, positional, keywords)


def checkPort(text: str) -> int:
    """Return C{text} as a TCP/UDP port to listen on, or raise L{BadEndpoint}."""
    try:
        return parsing.parseListenPort(text)
    except ValueError as e:
        raise BadEndpoint(str(e)) from None


def checkBacklog(text: str) -> int:
    """Return C{text} as a listen backlog, or raise L{BadEndpoint}."""
    try:
        return parsing.parseBacklog(text)
    except ValueError as e:
        raise BadEndpoint(str(e)) from None


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
    description = splitDescription(text)
    index = _PORT_ARGUMENT.get(description.kind)
    if index is not None:
        port = description.argument("port", index)
        if port is not None:
            checkPort(port)
        elif description.kind not in _PORT_DEFAULTED:
            raise BadEndpoint(f"{text!r}: no port given")
        backlog = description.keywords.get("backlog")
        if backlog is not None:
            checkBacklog(backlog)
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
