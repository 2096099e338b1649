"""The Kubernetes manifests and the Containerfile agree with each other,
with echotwist's own command lines, and with Kubernetes' schemas
(C{kubernetes-validate --strict}, offline: the schemas ship with it).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from echotwist.bench.arguments import buildParser
from echotwist.tap import Options
from echotwist.test.e2e.harness import PROJECT_ROOT, WAIT

MANIFESTS = PROJECT_ROOT / "contrib" / "kubernetes"
CONTAINERFILE = PROJECT_ROOT / "Containerfile"

try:
    import yaml
except ImportError:
    yaml = None  # type: ignore[assignment]


def documents() -> dict[tuple[str, str], dict[str, Any]]:
    """Every resource in contrib/kubernetes, by (kind, name)."""
    if not MANIFESTS.is_dir():
        raise SkipTest(f"{MANIFESTS} not found: run the tests from a source tree")
    if yaml is None:
        raise SkipTest("PyYAML is not installed (pip install '.[test]')")
    found = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            found[(document["kind"], document["metadata"]["name"])] = document
    return found


def podSpec(resource: dict[str, Any]) -> dict[str, Any]:
    """The pod template's spec of a Deployment or Job."""
    spec: dict[str, Any] = resource["spec"]["template"]["spec"]
    return spec


def container(resource: dict[str, Any]) -> dict[str, Any]:
    """The one container of a Deployment's or Job's pods."""
    [only] = podSpec(resource)["containers"]
    result: dict[str, Any] = only
    return result


def option(arguments: list[str], name: str) -> str:
    """The value after C{name} in C{arguments}."""
    return arguments[arguments.index(name) + 1]


class ValidateTests(SynchronousTestCase):
    """kubernetes-validate --strict accepts every manifest."""

    def test_strict(self) -> None:
        """Every file validates against the schemas, unknown fields refused."""
        documents()
        probe = subprocess.run(
            [sys.executable, "-c", "import kubernetes_validate"],
            capture_output=True,
            timeout=WAIT,
            check=False,
        )
        if probe.returncode != 0:
            raise SkipTest(
                "kubernetes-validate is not installed (pip install '.[test]')"
            )
        files = sorted(str(p) for p in MANIFESTS.glob("*.yaml"))
        done = subprocess.run(
            [sys.executable, "-m", "kubernetes_validate", "--strict", *files],
            capture_output=True,
            text=True,
            timeout=WAIT * 4,
            check=False,
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        passed = re.findall(r"passed for resource (\S+)", done.stdout)
        self.assertEqual(len(passed), len(documents()), done.stdout)


class DeploymentTests(SynchronousTestCase):
    """The Deployment runs a real echotwist command, safely, with real probes."""

    def setUp(self) -> None:
        """Read the manifests."""
        self.resources = documents()
        self.deployment = self.resources[("Deployment", "echotwist")]
        self.container = container(self.deployment)

    def serverArguments(self) -> list[str]:
        """The twistd echo options the container runs with."""
        arguments: list[str] = self.container["args"]
        return arguments[arguments.index("echo") + 1 :]

    def test_argumentsParse(self) -> None:
        """The server's options parse with echotwist's own Options."""
        options = Options(reactor=MemoryReactorClock())
        options.parseOptions(self.serverArguments())
        self.assertEqual(options["shutdown-timeout"], 20.0)
        twistd = self.container["args"][: self.container["args"].index("echo")]
        self.assertIn("-n", twistd)
        self.assertIn("--pidfile=", twistd)

    def test_portsMatch(self) -> None:
        """The container declares the TCP, UDP and metrics ports it listens on."""
        arguments = self.serverArguments()
        ports = {
            (p["protocol"], p["containerPort"]): p["name"]
            for p in self.container["ports"]
        }
        tcp = int(option(arguments, "--listen").split(":")[1])
        udp = int(option(arguments, "--udp"))
        metrics = int(option(arguments, "--metrics").split(":")[1])
        self.assertEqual(set(ports), {("TCP", tcp), ("UDP", udp), ("TCP", metrics)})

    def test_probesEcho(self) -> None:
        """Readiness and liveness run the echo client against the echo port."""
        port = option(self.serverArguments(), "--listen").split(":")[1]
        for name in ("readinessProbe", "livenessProbe"):
            probe = self.container[name]
            command = probe["exec"]["command"]
            self.assertEqual(command[:3], ["python", "-m", "echotwist.client"], name)
            self.assertEqual(command[-3:-2], ["127.0.0.1"], name)
            self.assertEqual(command[-1], port, name)
            self.assertTrue(command[-2], name)
            # The client gives up before Kubernetes does.
            self.assertLess(
                float(option(command, "--timeout")), probe["timeoutSeconds"]
            )

    def test_drainFitsTheGracePeriod(self) -> None:
        """The preStop pause and the drain fit in the termination grace period."""
        pause = self.container["lifecycle"]["preStop"]["sleep"]["seconds"]
        drain = float(option(self.serverArguments(), "--shutdown-timeout"))
        grace = podSpec(self.deployment)["terminationGracePeriodSeconds"]
        self.assertLess(pause + drain, grace)

    def test_hardened(self) -> None:
        """Non-root, read-only root, no privilege escalation, no capabilities,
        and resource requests and limits.
        """
        pod = podSpec(self.deployment)["securityContext"]
        self.assertTrue(pod["runAsNonRoot"])
        self.assertGreater(pod["runAsUser"], 0)
        security = self.container["securityContext"]
        self.assertTrue(security["readOnlyRootFilesystem"])
        self.assertFalse(security["allowPrivilegeEscalation"])
        self.assertEqual(security["capabilities"]["drop"], ["ALL"])
        for kind in ("requests", "limits"):
            self.assertEqual(
                set(self.container["resources"][kind]), {"cpu", "memory"}, kind
            )

    def test_serviceAndBudget(self) -> None:
        """The Service (TCP and UDP) and the budget select the Deployment's pods."""
        labels = self.deployment["spec"]["template"]["metadata"]["labels"]
        service = self.resources[("Service", "echotwist")]
        self.assertEqual(service["spec"]["selector"], labels)
        names = {p["name"]: p["protocol"] for p in self.container["ports"]}
        self.assertEqual(
            {(p["protocol"], names[p["targetPort"]]) for p in service["spec"]["ports"]},
            {("TCP", "TCP"), ("UDP", "UDP")},
        )
        budget = self.resources[("PodDisruptionBudget", "echotwist")]
        self.assertEqual(budget["spec"]["selector"]["matchLabels"], labels)


class LoadTestTests(SynchronousTestCase):
    """The Indexed Job's pods log what the merge Job merges."""

    def setUp(self) -> None:
        """Read the manifests."""
        self.resources = documents()
        self.load = self.resources[("Job", "echotwist-load")]
        self.merge = self.resources[("Job", "echotwist-load-merge")]

    def test_indexedBench(self) -> None:
        """Each pod of the Indexed Job runs the bench with a log of its own,
        against the Service's echo port; the options parse.
        """
        spec = self.load["spec"]
        self.assertEqual(spec["completionMode"], "Indexed")
        self.assertEqual(spec["parallelism"], spec["completions"])
        load = container(self.load)
        self.assertEqual(load["command"], ["python", "-m", "echotwist.bench"])
        arguments = buildParser().parse_args(load["args"])
        self.assertEqual(arguments.hlog, "/logs/load-$(INDEX).hlog")
        [index] = load["env"]
        self.assertEqual(
            index["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.annotations['batch.kubernetes.io/job-completion-index']",
        )
        service = self.resources[("Service", "echotwist")]
        self.assertEqual(arguments.host, service["metadata"]["name"])
        tcp = [p for p in service["spec"]["ports"] if p["protocol"] == "TCP"]
        self.assertEqual(arguments.port, tcp[0]["port"])

    def test_mergesEveryLog(self) -> None:
        """The merge waits for, and merges, exactly the logs the pods write."""
        completions = self.load["spec"]["completions"]
        logs = [f"/logs/load-{i}.hlog" for i in range(completions)]
        script = container(self.merge)["command"][-1]
        merge = [
            line for line in script.splitlines() if "echotwist.bench merge" in line
        ]
        self.assertEqual(len(merge), 1)
        self.assertEqual(shlex.split(merge[0])[-completions:], logs)
        self.assertIn(f"-eq {completions} ]", script)
        for resource in (self.load, self.merge):
            [volume] = podSpec(resource)["volumes"]
            self.assertEqual(
                volume["persistentVolumeClaim"]["claimName"], "echotwist-load-logs"
            )
        claim = self.resources[("PersistentVolumeClaim", "echotwist-load-logs")]
        self.assertEqual(claim["spec"]["accessModes"], ["ReadWriteMany"])


class ContainerfileTests(SynchronousTestCase):
    """The Containerfile builds from the wheel and fits the manifests."""

    def setUp(self) -> None:
        """Read the Containerfile's instructions."""
        if not CONTAINERFILE.exists():
            raise SkipTest(f"{CONTAINERFILE} not found: run from a source tree")
        text = CONTAINERFILE.read_text().replace("\\\n", " ")
        self.instructions = [
            line.split(None, 1)
            for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]

    def values(self, name: str) -> list[str]:
        """The arguments of every instruction C{name}."""
        return [rest for key, rest in self.instructions if key == name]

    def test_fromTheWheel(self) -> None:
        """A first stage builds the wheel; the image installs it, with extras."""
        self.assertEqual(len(self.values("FROM")), 2)
        self.assertTrue(any("pip wheel" in run for run in self.values("RUN")))
        [install] = [run for run in self.values("RUN") if "pip install" in run]
        self.assertIn(".whl", install)
        self.assertIn("[metrics,bench]", install)

    def test_fitsTheManifests(self) -> None:
        """User, ports and entry point are those the Deployment expects."""
        resources = documents()
        deployment = resources[("Deployment", "echotwist")]
        [user] = self.values("USER")
        self.assertEqual(
            user,
            f"{podSpec(deployment)['securityContext']['runAsUser']}:"
            f"{podSpec(deployment)['securityContext']['runAsGroup']}",
        )
        [exposed] = self.values("EXPOSE")
        declared = {
            f"{p['containerPort']}/{p['protocol'].lower()}"
            for p in container(deployment)["ports"]
        }
        self.assertEqual(set(exposed.split()), declared)
        [entrypoint] = self.values("ENTRYPOINT")
        self.assertEqual(entrypoint, '["twistd"]')
        self.assertTrue(Path(PROJECT_ROOT / ".containerignore").exists())
