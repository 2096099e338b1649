"""Hosts as network namespaces on one bridge, for C{benchmarks/cluster.py}.

Each host is a namespace with one interface, C{eth0}, the end of a veth
pair whose other end is a port of the bridge C{br0}; the bridge lives in
a namespace of its own, so nothing is added to the machine's own network
namespace (no interface, no address, no route).  Every namespace is named
after the script's pid (C{etc4711-s1}), and L{Cluster.destroy} deletes
exactly the namespaces L{Cluster.create} made, taking their interfaces
with them.  The addresses (L{SUBNET}) exist only inside those namespaces.

Every command runs with a timeout (C{benchmarks.netfaults.run}).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.netfaults import deleteNamespaces, run

SUBNET = "10.204.0.0/24"
PREFIX = 24


@dataclass(frozen=True)
class Host:
    """One host: its role's name (C{s1}, C{lb}, C{c1}), namespace and address."""

    name: str
    namespace: str
    address: str

    def command(self, command: Sequence[str]) -> list[str]:
        """C{command} run inside this host (C{ip netns exec} execs it)."""
        return ["ip", "netns", "exec", self.namespace, *command]


def plan(tag: int, servers: int = 3, loadHosts: int = 2) -> list[Host]:
    """The hosts of a cluster tagged C{tag}: servers, the balancer, load hosts.

    Servers are C{s1}... at .11, .12, ..., the balancer C{lb} at .2, load
    hosts C{c1}... at .21, .22, ... of L{SUBNET}.
    """
    hosts = [
        Host(f"s{i}", f"etc{tag}-s{i}", f"10.204.0.{10 + i}")
        for i in range(1, servers + 1)
    ]
    hosts.append(Host("lb", f"etc{tag}-lb", "10.204.0.2"))
    hosts += [
        Host(f"c{i}", f"etc{tag}-c{i}", f"10.204.0.{20 + i}")
        for i in range(1, loadHosts + 1)
    ]
    return hosts


class Cluster:
    """The hosts of L{plan} and the bridge that joins them."""

    def __init__(self, hosts: Sequence[Host], tag: int | None = None) -> None:
        tag = os.getpid() if tag is None else tag
        self.hosts = list(hosts)
        self.bridgeNamespace = f"etc{tag}-br"
        # Namespaces made so far, in order: only these are deleted.
        self.made: list[str] = []

    def host(self, name: str) -> Host:
        """The host called C{name}."""
        [host] = [h for h in self.hosts if h.name == name]
        return host

    def create(self) -> None:
        """Make the bridge's namespace and every host, each linked to the bridge."""
        self._namespace(self.bridgeNamespace)
        bridge = ["ip", "-n", self.bridgeNamespace, "link"]
        run([*bridge, "add", "br0", "type", "bridge"])
        run([*bridge, "set", "br0", "up"])
        for index, host in enumerate(self.hosts):
            self._namespace(host.namespace)
            port = f"p{index}"
            run(
                [
                    "ip",
                    "-n",
                    host.namespace,
                    "link",
                    "add",
                    "eth0",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    port,
                    "netns",
                    self.bridgeNamespace,
                ]
            )
            run([*bridge, "set", port, "master", "br0", "up"])
            inside = ["ip", "-n", host.namespace]
            run([*inside, "addr", "add", f"{host.address}/{PREFIX}", "dev", "eth0"])
            run([*inside, "link", "set", "eth0", "up"])
            run([*inside, "link", "set", "lo", "up"])

    def _namespace(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        self.made.append(name)

    def destroy(self) -> list[str]:
        """Delete the namespaces L{create} made (their links go with them).

        Return the errors, if any, rather than raising: teardown goes on.
        """
        errors = deleteNamespaces(self.made)
        self.made = []
        return errors
