"""The C{echo} twistd plugin; C{echotwist.tap} is imported only when used."""

from twisted.application.service import ServiceMaker

echo = ServiceMaker(
    "echotwist",
    "echotwist.tap",
    "An RFC 862 echo server (TCP, TLS, UNIX, UDP), with flow control and half-close.",
    "echo",
)
