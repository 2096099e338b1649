"""echotwist: an RFC 862 echo server for twistd and an echo client."""

__version__ = "0.1.0"
