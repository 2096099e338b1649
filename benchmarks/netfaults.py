"""Two network namespaces joined by a veth pair, and faults on the link.

The server runs in one namespace and the load in the other, so packets
between them cross a real (virtual) link that C{iptables} and C{tc}
inside the namespaces can drop, black out or throttle.  Everything made
here is named after the script's pid, and L{NamespacePair.destroy}
removes exactly what L{NamespacePair.create} made; the host's own
interfaces, namespaces and firewall are never touched (the addresses,
10.203.0.0/30, exist only inside the two namespaces).

Every command runs with a timeout (L{COMMAND_TIMEOUT}).  Delay and
reordering are not offered: they need the C{netem} qdisc, and a kernel
without it (C{tc qdisc add ... netem} says "Specified qdisc kind is
unknown") has no other clean way (see docs/faults.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

COMMAND_TIMEOUT = 30.0
INSTALL_TIMEOUT = 900.0

SERVER_ADDRESS = "10.203.0.1"
CLIENT_ADDRESS = "10.203.0.2"
PREFIX = 30


class CommandFailed(Exception):
    """A command failed; the message says which and what it printed."""


def run(command: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> str:
    """Run C{command}; return its output, or raise L{CommandFailed}."""
    try:
        done = subprocess.run(
            list(command),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"{' '.join(command)}: no end in {timeout:g} s") from None
    except OSError as e:
        raise CommandFailed(f"{' '.join(command)}: {e.strerror}") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise CommandFailed(
            f"{' '.join(command)}: exit {done.returncode}"
            + (f": {said[-1]}" if said else "")
        )
    return done.stdout


def aptInstall(packages: Sequence[str]) -> None:
    """C{apt-get update}, then install C{packages} (no recommends, no prompts)."""
    if shutil.which("apt-get") is None:
        raise CommandFailed(f"{', '.join(packages)} missing and no apt-get to install")
    environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
    ):
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
                stdin=subprocess.DEVNULL,
                env=environment,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CommandFailed(f"{' '.join(command)}: no end in 15 minutes") from None
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip().splitlines()
            raise CommandFailed(
                f"{' '.join(command)}: exit {done.returncode}"
                + (f": {said[-1]}" if said else "")
            )


def ensureTools() -> list[str]:
    """Install C{iptables} (and C{tc}'s iproute2) with apt-get when missing.

    Return what was installed, for the notes.
    """
    missing = []
    if shutil.which("tc") is None:
        missing.append("iproute2")
    if shutil.which("iptables") is None:
        missing.append("iptables")
    if missing:
        aptInstall(missing)
    return missing


class NamespacePair:
    """A server and a client namespace, a veth between them, and faults on it."""

    def __init__(self, tag: int | None = None) -> None:
        tag = os.getpid() if tag is None else tag
        self.serverNamespace = f"echofault-s{tag}"
        self.clientNamespace = f"echofault-c{tag}"
        # Interface names are at most 15 bytes (IFNAMSIZ - 1).
        self.serverLink = f"efs{tag}"
        self.clientLink = f"efc{tag}"
        self.made: list[str] = []
        self.iptables = "iptables"

    def create(self) -> None:
        """Make both namespaces and the link, addressed and up."""
        for namespace in (self.serverNamespace, self.clientNamespace):
            run(["ip", "netns", "add", namespace])
            self.made.append(namespace)
        run(
            [
                "ip",
                "link",
                "add",
                self.serverLink,
                "netns",
                self.serverNamespace,
                "type",
                "veth",
                "peer",
                "name",
                self.clientLink,
                "netns",
                self.clientNamespace,
            ]
        )
        for namespace, link, address in (
            (self.serverNamespace, self.serverLink, SERVER_ADDRESS),
            (self.clientNamespace, self.clientLink, CLIENT_ADDRESS),
        ):
            run(
                [
                    "ip",
                    "-n",
                    namespace,
                    "addr",
                    "add",
                    f"{address}/{PREFIX}",
                    "dev",
                    link,
                ]
            )
            run(["ip", "-n", namespace, "link", "set", link, "up"])
            run(["ip", "-n", namespace, "link", "set", "lo", "up"])

    def destroy(self) -> list[str]:
        """Delete what L{create} made (the link goes with its namespaces).

        Return the errors, if any, rather than raising: teardown goes on.
        """
        errors = deleteNamespaces(self.made)
        self.made = []
        return errors

    def namespaces(self) -> tuple[str, str]:
        """The server's and the client's namespace."""
        return self.serverNamespace, self.clientNamespace

    def inNamespace(self, namespace: str, command: Sequence[str]) -> list[str]:
        """C{command} run inside C{namespace}."""
        return ["ip", "netns", "exec", namespace, *command]

    def chooseIptables(self) -> None:
        """Use the first of iptables, iptables-legacy that can drop at random here.

        Tried with a rule added and deleted in the server's namespace: the
        statistic match needs kernel support that the default (nft)
        backend may lack where the legacy one has it, or the reverse.

        @raise CommandFailed: neither works; the message says why.
        """
        rule = ["INPUT", "-m", "statistic", "--mode", "random"]
        rule += ["--probability", "0.5", "-j", "DROP"]
        reasons = []
        for candidate in ("iptables", "iptables-legacy"):
            if shutil.which(candidate) is None:
                continue
            command = self.inNamespace(self.serverNamespace, [candidate])
            try:
                run([*command, "-A", *rule])
                run([*command, "-D", *rule])
            except CommandFailed as e:
                reasons.append(str(e))
                continue
            self.iptables = candidate
            return
        raise CommandFailed("no usable iptables: " + " / ".join(reasons))

    def _iptables(self, namespace: str, arguments: Sequence[str]) -> None:
        run(self.inNamespace(namespace, [self.iptables, *arguments]))

    def dropRandomly(self, probability: float) -> list[str]:
        """Drop incoming packets with C{probability} in both namespaces (both ways).

        Return the rule, to give to L{removeRule}.
        """
        rule = ["INPUT", "-m", "statistic", "--mode", "random"]
        rule += ["--probability", f"{probability:g}", "-j", "DROP"]
        for namespace in self.namespaces():
            self._iptables(namespace, ["-A", *rule])
        return rule

    def dropAll(self) -> list[str]:
        """Drop every incoming packet in both namespaces: a blackout."""
        rule = ["INPUT", "-j", "DROP"]
        for namespace in self.namespaces():
            self._iptables(namespace, ["-I", *rule])
        return rule

    def removeRule(self, rule: Sequence[str]) -> None:
        """Delete C{rule} (from L{dropRandomly} or L{dropAll}) in both namespaces."""
        for namespace in self.namespaces():
            self._iptables(namespace, ["-D", *rule])

    def limitRate(self, rate: str, burst: str = "16kb", latency: str = "100ms") -> None:
        """Limit both directions of the link to C{rate} with a token bucket (tbf)."""
        for namespace, link in (
            (self.serverNamespace, self.serverLink),
            (self.clientNamespace, self.clientLink),
        ):
            run(
                self.inNamespace(
                    namespace,
                    [
                        "tc",
                        "qdisc",
                        "add",
                        "dev",
                        link,
                        "root",
                        "tbf",
                        "rate",
                        rate,
                        "burst",
                        burst,
                        "latency",
                        latency,
                    ],
                )
            )

    def hasNetem(self) -> bool:
        """Whether this kernel has the netem qdisc (tried on the server's loopback)."""
        command = self.inNamespace(self.serverNamespace, ["tc", "qdisc"])
        try:
            run([*command, "add", "dev", "lo", "root", "netem", "delay", "1ms"])
        except CommandFailed:
            return False
        run([*command, "del", "dev", "lo", "root"])
        return True

    def removeRateLimit(self) -> None:
        """Remove L{limitRate}'s qdiscs."""
        for namespace, link in (
            (self.serverNamespace, self.serverLink),
            (self.clientNamespace, self.clientLink),
        ):
            run(
                self.inNamespace(namespace, ["tc", "qdisc", "del", "dev", link, "root"])
            )


def deleteNamespaces(namespaces: list[str]) -> list[str]:
    """Delete C{namespaces}, newest first (their links go with them).

    Return the errors, if any, rather than raising: teardown goes on.
    """
    errors = []
    for namespace in reversed(namespaces):
        try:
            run(["ip", "netns", "del", namespace])
        except CommandFailed as e:
            errors.append(str(e))
    return errors
