"""The Helm chart's pods as local command lines: render, then translate what a kubelet would run.

:func:`render` runs ``helm template`` on ``charts/tandem``; :func:`local_pod` takes one rendered
Deployment and produces the ``tandem`` command line, environment and working folders that
Kubernetes would give its container, with only the host-specific parts translated:

* every container port (gRPC, metrics, health) → a free loopback port; ``--host=0.0.0.0`` →
  loopback (a pod's interfaces are its own, ours are shared);
* every volume → a local folder: a ``persistentVolumeClaim`` is one folder per claim (shared by
  the pods that mount it, as on one node), an ``emptyDir`` is one folder per pod, a ``secret``
  is a folder holding the keys the caller supplies; mount paths in arguments and environment
  values are rewritten to them;
* in-cluster Service addresses (``<svc>.<ns>.svc:<port>``) → the loopback port of the pod the
  Service selects (or a port nobody listens on, when that pod is not part of the run);
* environment: ``value``, ``configMapRef`` (envFrom), ``secretKeyRef`` (from the supplied
  secrets: a missing key fails like ``CreateContainerConfigError``), ``fieldRef`` (the pod
  name) and Kubernetes' ``$(VAR)`` expansion of earlier variables.

Nothing else is changed, so a chart whose commands, paths or wiring are wrong fails here as
it would in a cluster. Used by :mod:`tandem_testing.chart_topology` (tests and
``bench.freshness --topology chart``).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tandem.errors import InvalidInput, Unavailable
from tandem_testing.infra import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "tandem"
ENTRYPOINT = ["tandem"]
"""The image's ``ENTRYPOINT`` (repo-root Dockerfile); containers set ``args`` only."""

_PORT_ARG = re.compile(r"^(--[a-z-]*port)=(\d+)$")
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def helm_binary() -> str:
    """Path of the project's Helm (``scripts/helm.sh path``); :class:`Unavailable` naming the fix."""
    proc = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "helm.sh"), "path"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise Unavailable(f"Helm is not installed: run `make setup` (or `bash scripts/helm.sh install`). {proc.stderr}")
    return proc.stdout.strip()


def render(values: dict[str, Any], *, chart: Path = CHART, release: str = "tdm",
           namespace: str = "search") -> list[dict[str, Any]]:
    """``helm template`` of ``chart`` with ``values`` (a values file); the rendered objects."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        yaml.safe_dump(values, fh)
        values_file = fh.name
    try:
        proc = subprocess.run([helm_binary(), "template", release, str(chart), "--namespace", namespace,
                               "--kube-version", "1.30.0", "-f", values_file],
                              capture_output=True, text=True, check=False)
    finally:
        os.unlink(values_file)
    if proc.returncode != 0:
        raise InvalidInput(f"`helm template` of {chart} failed: {proc.stderr.strip()}")
    return [o for o in yaml.safe_load_all(proc.stdout) if o]


def component_of(obj: dict[str, Any]) -> str:
    """The ``app.kubernetes.io/component`` label of a rendered object ('' when absent)."""
    return obj.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component", "")


@dataclass
class LocalPod:
    """One rendered Deployment's first container, as a local command line."""

    component: str
    argv: list[str]
    env: dict[str, str]
    ports: dict[str, int]
    """Container port name → local port."""
    probe_port: int
    """Local port of the readiness probe's grpc.health.v1 (the kubelet's check)."""
    mounts: dict[str, Path] = field(default_factory=dict)
    """Mount path in the container → local folder."""

    def local_path(self, container_path: str) -> Path:
        """Where a path inside the container lives on this machine."""
        return Path(_rewrite(container_path, self.mounts))


@dataclass
class PodPlan:
    """Inputs shared by every pod of one run: where volumes go and what the Secrets hold."""

    workdir: Path
    secrets: dict[str, dict[str, str]]
    """Secret name → key → value (what ``kubectl create secret`` would have stored)."""
    objects: list[dict[str, Any]]
    namespace: str = "search"
    grpc_ports: dict[str, int] = field(default_factory=dict)
    """Deployment name → local gRPC port, filled in as pods are planned (Service targets)."""

    def deployment(self, component: str) -> dict[str, Any]:
        """The rendered Deployment of ``component``."""
        for obj in self.objects:
            if obj["kind"] == "Deployment" and component_of(obj) == component:
                return obj
        raise InvalidInput(f"the chart rendered no `{component}` Deployment with these values")

    def config_map(self, name: str) -> dict[str, str]:
        """Data of the rendered ConfigMap ``name``."""
        for obj in self.objects:
            if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == name:
                return dict(obj.get("data") or {})
        raise InvalidInput(f"ConfigMap `{name}` is referenced but not rendered")

    def secret_value(self, name: str, key: str) -> str:
        """A Secret's key, or :class:`InvalidInput` as the kubelet's CreateContainerConfigError."""
        try:
            return self.secrets[name][key]
        except KeyError:
            raise InvalidInput(f"Secret `{name}` has no key `{key}` (CreateContainerConfigError)") from None

    def service_target(self, match: re.Match[str]) -> str:
        """``127.0.0.1:<port>`` of the pod behind an in-cluster Service address."""
        name = match.group(1)
        port = self.grpc_ports.get(name)
        return f"127.0.0.1:{port if port is not None else free_port()}"


def rendered_secrets(objects: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Secret name → key → value of the Secrets the chart itself renders (the TLS pair it
    generates), decoded as the API server would store them."""
    import base64

    out: dict[str, dict[str, str]] = {}
    for obj in objects:
        if obj.get("kind") == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
            out[obj["metadata"]["name"]] = {**data, **(obj.get("stringData") or {})}
    return out


def _rewrite(text: str, mounts: dict[str, Path]) -> str:
    """Replace every mount path that starts a path in ``text`` by its local folder (one pass)."""
    if not mounts:
        return text
    alternation = "|".join(re.escape(m) for m in sorted(mounts, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w.-])({alternation})(?=/|$|[^\w.-])")
    return pattern.sub(lambda m: str(mounts[m.group(1)]), text)


def _volume_dirs(plan: PodPlan, component: str, spec: dict[str, Any]) -> dict[str, Path]:
    """Volume name → local folder (created; Secret keys written as files)."""
    dirs: dict[str, Path] = {}
    for vol in spec.get("volumes", []):
        name = vol["name"]
        if "persistentVolumeClaim" in vol:
            path = plan.workdir / "pvc" / vol["persistentVolumeClaim"]["claimName"]
        elif "emptyDir" in vol:
            path = plan.workdir / "pods" / component / name
        elif "secret" in vol:
            secret = vol["secret"]["secretName"]
            path = plan.workdir / "secrets" / secret
            path.mkdir(parents=True, exist_ok=True)
            for key, value in plan.secrets.get(secret, {}).items():
                (path / key).write_text(value)
        else:
            raise InvalidInput(f"{component}: volume `{name}` has a type this launcher does not map: {sorted(vol)}")
        path.mkdir(parents=True, exist_ok=True)
        dirs[name] = path
    return dirs


def _env(plan: PodPlan, deployment: dict[str, Any], container: dict[str, Any],
         mounts: dict[str, Path]) -> dict[str, str]:
    """The container's environment as the kubelet builds it (envFrom first, then env)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(plan.config_map(source["configMapRef"]["name"]))
        elif "secretRef" in source:
            env.update(plan.secrets.get(source["secretRef"]["name"], {}))
    for var in container.get("env", []):
        if "value" in var:
            value = _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), str(var["value"]))
        elif "secretKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["secretKeyRef"]
            value = plan.secret_value(ref["name"], ref["key"])
        elif "fieldRef" in var["valueFrom"]:
            value = f"{deployment['metadata']['name']}-local"
        else:
            raise InvalidInput(f"env `{var['name']}`: unsupported valueFrom {sorted(var['valueFrom'])}")
        env[var["name"]] = value
    return {k: _rewrite(v, mounts) for k, v in env.items()}


def local_pod(plan: PodPlan, component: str) -> LocalPod:
    """Plan ``component``'s pod: its command line, environment and local folders."""
    deployment = plan.deployment(component)
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    if container.get("command"):
        raise InvalidInput(f"{component}: overrides the image ENTRYPOINT ({container['command']}); not supported")
    dirs = _volume_dirs(plan, component, spec)
    mounts = {m["mountPath"]: dirs[m["name"]] for m in container.get("volumeMounts", [])}
    by_number = {p["containerPort"]: free_port() for p in container.get("ports", [])}
    ports = {p["name"]: by_number[p["containerPort"]] for p in container.get("ports", [])}
    if "grpc" in ports:
        plan.grpc_ports[deployment["metadata"]["name"]] = ports["grpc"]
    service = re.compile(rf"([a-z0-9-]+)\.{re.escape(plan.namespace)}\.svc(?:\.cluster\.local)?:\d+")
    argv = []
    for arg in container.get("args", []):
        arg = str(arg)
        m = _PORT_ARG.match(arg)
        if m and int(m.group(2)) in by_number:
            arg = f"{m.group(1)}={by_number[int(m.group(2))]}"
        arg = arg.replace("--host=0.0.0.0", "--host=127.0.0.1")
        arg = service.sub(plan.service_target, arg)
        argv.append(_rewrite(arg, mounts))
    probe = container["readinessProbe"]["grpc"]["port"]
    probe_port = by_number[probe] if isinstance(probe, int) else ports[probe]
    return LocalPod(component, [*ENTRYPOINT, *argv], _env(plan, deployment, container, mounts), ports,
                    probe_port, mounts)
