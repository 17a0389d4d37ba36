"""The Kubernetes manifests (deploy/k8s) and the application image (deploy/Dockerfile), offline.

No kustomize, helm, cluster or Docker here: the overlays are rendered by a small loader that does
what kustomize does for the features they use (and refuses any other), every object is validated
against the Kubernetes JSON schemas (kubernetes-validate, strict: unknown fields are errors) and
the ScaledObjects against KEDA's CRD (vendored in deploy/k8s/crds), and the NATS chart values
against the chart's defaults (vendored in deploy/k8s/nats). Then the rules of docs/deploy.md are
checked on the rendered objects, and each rule is shown to fail once its protection is removed.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import json
import re
import secrets
import subprocess
import tomllib
import zoneinfo
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import msgspec
import pytest
import yaml

from bus import streams
from config.loader import SettingsError, load
from consumers.settings import ConsumerSettings
from gateway.settings import GatewaySettings
from runner.settings import RunnerSettings
from tests.conftest import ROOT

Obj = dict[str, Any]

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "production")
# The oldest Kubernetes the manifests support (the preStop sleep action is on by default from
# 1.30) and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30", "1.37")
NAMESPACE = "coderunner"
UID = 10001
# The official chart's release `nats` in the namespace `nats` (deploy/k8s/nats/values.yaml).
NATS_CHART_VERSION = "2.14.2"
NATS_MONITORING = "nats-headless.nats.svc.cluster.local:8222"
# Where sandbox nodes serve their engine's socket (docs/deploy.md, "Sandbox nodes").
ENGINE_DIR = "/run/coderunner-engine"


# --- A kustomize subset --------------------------------------------------------------------------

KUSTOMIZATION_KEYS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "configMapGenerator",
    "secretGenerator",
    "images",
    "patches",
}
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}


class KustomizeError(Exception):
    """A kustomization uses something this loader does not render as kustomize would."""


@dataclass
class Build:
    objects: list[Obj] = field(default_factory=list)
    generated: set[tuple[str, str]] = field(default_factory=set)  # (kind, name) made by a generator


def yaml_documents(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _inside(root: Path, path: Path) -> Path:
    # kustomize's default load restriction: files a kustomization reads live under its folder.
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise KustomizeError(f"{path} is outside {root} (kustomize refuses it)")
    return resolved


def _env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            if not sep:
                raise KustomizeError(f"{path}: {line!r} is not KEY=value")
            values[key] = value
    return values


def _generate(kind: str, spec: Mapping[str, Any], root: Path, env_files: Mapping[Path, Path]) -> Obj:
    unknown = set(spec) - {"name", "literals", "envs", "behavior", "type"}
    if unknown:
        raise KustomizeError(f"{root}: generator keys {sorted(unknown)} are not rendered here")
    data: dict[str, str] = {}
    for env in spec.get("envs", []):
        path = _inside(root, root / env)
        data.update(_env_file(env_files.get(path, path)))
    for literal in spec.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    if kind == "Secret":
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        return {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": {"name": spec["name"]},
            "type": spec.get("type", "Opaque"),
            "data": encoded,
        }
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": spec["name"]}, "data": data}


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def json_patch(document: Any, operations: Sequence[Mapping[str, Any]]) -> None:
    """RFC 6902 add, replace and remove (what the overlays and KEDA's CRD patch use), in place."""
    for op in operations:
        *parents, last = _pointer(op["path"])
        target = document
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if op["op"] == "add":
            if isinstance(target, list):
                target.insert(len(target) if last == "-" else int(last), op["value"])
            else:
                target[last] = op["value"]
        elif op["op"] == "replace":
            key: Any = int(last) if isinstance(target, list) else last
            if isinstance(target, dict) and key not in target:
                raise KustomizeError(f"replace of a missing {op['path']}")
            target[key] = op["value"]
        elif op["op"] == "remove":
            del target[int(last) if isinstance(target, list) else last]
        else:
            raise KustomizeError(f"JSON patch operation {op['op']!r} is not rendered here")


def _patch(objects: list[Obj], spec: Mapping[str, Any], root: Path) -> None:
    target = spec.get("target", {})
    if set(target) - {"kind", "name"} or set(spec) - {"target", "patch", "path"}:
        raise KustomizeError(f"{root}: only patches with a target kind and name are rendered here")
    text = spec["patch"] if "patch" in spec else _inside(root, root / spec["path"]).read_text()
    operations = yaml.safe_load(text)
    if not isinstance(operations, list):
        raise KustomizeError(f"{root}: strategic merge patches are not rendered here (use JSON 6902)")
    matched = [
        o
        for o in objects
        if o["kind"] == target.get("kind", o["kind"])
        and o["metadata"]["name"] == target.get("name", o["metadata"]["name"])
    ]
    if not matched:
        raise KustomizeError(f"{root}: patch target {target} matches nothing")
    for obj in matched:
        json_patch(obj, operations)


def pod_templates(obj: Obj) -> Iterator[Obj]:
    template = obj.get("spec", {}).get("template", {}).get("spec")
    if template is not None:
        yield template


def containers(obj: Obj) -> Iterator[Obj]:
    for spec in pod_templates(obj):
        yield from spec.get("initContainers", [])
        yield from spec.get("containers", [])


def _split_image(image: str) -> tuple[str, str]:
    """(name, ":tag" or "@digest" or "")"""
    if "@" in image:
        name, _, digest = image.partition("@")
        return name, f"@{digest}"
    colon = image.rfind(":")
    return (image[:colon], image[colon:]) if colon > image.rfind("/") else (image, "")


def _images(objects: list[Obj], spec: Mapping[str, Any]) -> None:
    if set(spec) - {"name", "newName", "newTag"}:
        raise KustomizeError(f"images: {sorted(spec)} not rendered here")
    for obj in objects:
        for container in containers(obj):
            name, tag = _split_image(container["image"])
            if name == spec["name"]:
                container["image"] = spec.get("newName", name) + (f":{spec['newTag']}" if "newTag" in spec else tag)


def _build(root: Path, env_files: Mapping[Path, Path]) -> Build:
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    if unknown:
        raise KustomizeError(f"{root}: {sorted(unknown)} not rendered by this loader")
    build = Build()
    for entry in kustomization.get("resources", []):
        path = root / entry
        if path.is_dir():
            base = _build(path.resolve(), env_files)
            build.objects += base.objects
            build.generated |= base.generated
        else:
            build.objects += yaml_documents(_inside(root, path))
    for key, kind in (("configMapGenerator", "ConfigMap"), ("secretGenerator", "Secret")):
        for spec in kustomization.get(key, []):
            made = _generate(kind, spec, root, env_files)
            existing = [o for o in build.objects if o["kind"] == kind and o["metadata"]["name"] == spec["name"]]
            behavior = spec.get("behavior", "create")
            if behavior == "create":
                if existing:
                    raise KustomizeError(f"{root}: {kind} {spec['name']} exists already (behavior: merge?)")
                build.objects.append(made)
                build.generated.add((kind, spec["name"]))
            elif behavior in ("merge", "replace") and existing and (kind, spec["name"]) in build.generated:
                if behavior == "merge":
                    existing[0]["data"].update(made["data"])
                else:
                    existing[0]["data"] = made["data"]
            else:
                raise KustomizeError(f"{root}: {behavior} of {kind} {spec['name']}, which no base generates")
    namespace = kustomization.get("namespace")
    if namespace:
        for obj in build.objects:
            if obj["kind"] == "Namespace" and obj["metadata"]["name"] != namespace:
                raise KustomizeError(f"kustomize would rename Namespace {obj['metadata']['name']} to {namespace}")
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = namespace
    for spec in kustomization.get("images", []):
        _images(build.objects, spec)
    for spec in kustomization.get("patches", []):
        _patch(build.objects, spec, root)
    return build


def _hash_suffix(obj: Obj) -> str:
    # A content hash in the manner of kustomize's: a changed ConfigMap or Secret gets a new name,
    # and every pod that references it rolls.
    content = {"kind": obj["kind"], "name": obj["metadata"]["name"], "data": obj["data"]}
    if obj["kind"] == "Secret":
        content["type"] = obj["type"]
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return digest[:10].translate(str.maketrans("013ae", "ghkmt"))


def _references(obj: Obj) -> Iterator[tuple[str, Obj, str]]:
    """(kind, the dict holding the name, its key) of every ConfigMap and Secret a pod names."""
    for spec in pod_templates(obj):
        for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    yield "ConfigMap", source["configMapRef"], "name"
                if "secretRef" in source:
                    yield "Secret", source["secretRef"], "name"
            for env in container.get("env", []):
                ref = env.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    yield "ConfigMap", ref["configMapKeyRef"], "name"
                if "secretKeyRef" in ref:
                    yield "Secret", ref["secretKeyRef"], "name"
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                yield "ConfigMap", volume["configMap"], "name"
            if "secret" in volume:
                yield "Secret", volume["secret"], "secretName"


def kustomize(root: Path, env_files: Mapping[Path, Path] | None = None) -> list[Obj]:
    """``kustomize build root`` for the features deploy/k8s uses; ``env_files`` stands in for
    files that are not in the repository (the git-ignored secrets)."""
    build = _build(root.resolve(), {k.resolve(): v for k, v in (env_files or {}).items()})
    renamed = {}
    for obj in build.objects:
        key = (obj["kind"], obj["metadata"]["name"])
        if key in build.generated:
            obj["metadata"]["name"] = renamed[key] = f"{key[1]}-{_hash_suffix(obj)}"
    for obj in build.objects:
        for kind, holder, name_key in _references(obj):
            holder[name_key] = renamed.get((kind, holder[name_key]), holder[name_key])
    return build.objects


@functools.cache
def _rendered(overlay: str) -> tuple[Obj, ...]:
    root = K8S / "overlays" / overlay
    return tuple(kustomize(root, {root / "secrets.env": K8S / "secrets.example.env"}))


def rendered(overlay: str) -> list[Obj]:
    """The overlay's objects, with the example secrets (a fresh copy each time: tests mutate it)."""
    return copy.deepcopy(list(_rendered(overlay)))


def find(objects: Sequence[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind} {name}: {len(matches)} found"
    return matches[0]


def generated(objects: Sequence[Obj], kind: str, name: str) -> Obj:
    matches = [
        o for o in objects if o["kind"] == kind and re.fullmatch(rf"{name}-[a-z0-9]{{10}}", o["metadata"]["name"])
    ]
    assert len(matches) == 1, f"generated {kind} {name}: {len(matches)} found"
    return matches[0]


# --- Schemas -------------------------------------------------------------------------------------

CRDS = {
    "ScaledObject": (K8S / "crds" / "keda.sh_scaledobjects.yaml", K8S / "crds" / "keda.sh_scaledobjects.patch.yaml"),
}
# The CEL rules (x-kubernetes-validations) of the vendored CRDs, which jsonschema does not run:
# each is checked here by hand, and a rule not listed fails test_crd_rules_are_all_known.
CEL_RULES: dict[str, Callable[[Obj], bool]] = {
    "!has(self.minReplicaCount) || self.minReplicaCount <= (has(self.maxReplicaCount) ? self.maxReplicaCount : 100)": (
        # A mistyped count is the schema's error, not this rule's.
        lambda spec: (
            not all(isinstance(spec.get(k, 0), int) for k in ("minReplicaCount", "maxReplicaCount"))
            or spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100)
        )
    ),
}
# The nats-jetstream scaler's trigger metadata, from KEDA v2.20.2's
# pkg/scalers/nats_jetstream_scaler.go (natsJetStreamMetadata): KEDA ignores a misspelt key.
NATS_SCALER_KEYS = {
    "account",
    "accountID",
    "stream",
    "consumer",
    "lagThreshold",
    "activationLagThreshold",
    "useHttps",
    "natsServerMonitoringEndpoint",
}
# The cron scaler's, all required (KEDA v2.20.2's pkg/scalers/cron_scaler.go, cronMetadata).
CRON_SCALER_KEYS = {"timezone", "start", "end", "desiredReplicas"}


@pytest.fixture(scope="module", autouse=True)
def _schemas_read_once() -> Iterator[None]:
    # kubernetes-validate re-reads its 1.2 MB definitions file for every object: read once (the
    # files never change), which takes the validations from seconds to a fraction of one.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            kubernetes_validate.utils, "schema_contents", functools.cache(kubernetes_validate.utils.schema_contents)
        )
        yield


def kubernetes_errors(obj: Obj, version: str) -> list[str]:
    name = f"{obj['kind']} {obj['metadata'].get('name')}"
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{name}: {'.'.join(map(str, exc.path))}: {exc.message} (Kubernetes {version})"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{name}: {exc.message}"]
    return []


def _strict(schema: Any) -> None:
    """Unknown fields become errors, as `kubectl apply`'s strict field validation makes them."""
    if isinstance(schema, dict):
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        for value in schema.values():
            _strict(value)
    elif isinstance(schema, list):
        for value in schema:
            _strict(value)


@functools.cache
def crd(kind: str) -> Obj:
    path, patch = CRDS[kind]
    (definition,) = yaml_documents(path)
    json_patch(definition, yaml.safe_load(patch.read_text()))
    return definition


def cel_rules(schema: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """(the object's path, the rule) of every x-kubernetes-validations rule of a schema."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, " ".join(rule["rule"].split())
    for name, child in schema.get("properties", {}).items():
        yield from cel_rules(child, (*path, name))
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from cel_rules(schema[key], (*path, "*"))


def crd_errors(obj: Obj) -> list[str]:
    name = f"{obj['kind']} {obj['metadata'].get('name')}"
    definition = crd(obj["kind"])
    group, _, version = obj["apiVersion"].partition("/")
    served = {v["name"]: v for v in definition["spec"]["versions"] if v["served"]}
    if group != definition["spec"]["group"] or version not in served:
        return [f"{name}: {obj['apiVersion']} is not served by the CRD"]
    schema = copy.deepcopy(served[version]["schema"]["openAPIV3Schema"])
    _strict(schema)
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{name}: {'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(obj)]
    for path, rule in cel_rules(schema):
        node: Any = obj
        for part in path:
            node = node.get(part) if isinstance(node, dict) and part != "*" else None
        if isinstance(node, dict) and rule in CEL_RULES and not CEL_RULES[rule](node):
            errors.append(f"{name}: {'.'.join(path)} violates the CRD rule {rule}")
    if obj["kind"] == "ScaledObject":
        for trigger in obj.get("spec", {}).get("triggers", []):
            if trigger.get("type") == "nats-jetstream":
                unknown = set(trigger.get("metadata", {})) - NATS_SCALER_KEYS
                if unknown:
                    errors.append(f"{name}: trigger metadata {sorted(unknown)} unknown to the nats-jetstream scaler")
            if trigger.get("type") == "cron":
                keys = set(trigger.get("metadata", {}))
                if keys != CRON_SCALER_KEYS:
                    errors.append(
                        f"{name}: cron trigger metadata {sorted(keys)}, "
                        f"the cron scaler takes {sorted(CRON_SCALER_KEYS)}"
                    )
    return errors


# --- The rules -----------------------------------------------------------------------------------

SETTINGS: dict[str, type[msgspec.Struct]] = {
    "gateway": GatewaySettings,
    "runner": RunnerSettings,
    "consume": ConsumerSettings,
}
# What each process's pod may reach (namespace of the peer, port), DNS included.
DNS = ("kube-system", 53)
EGRESS = {
    "gateway": {DNS, ("nats", 4222), ("redis", 6379), ("mongodb", 27017)},
    "runner": {DNS, ("nats", 4222)},
    "consumer": {DNS, ("nats", 4222), ("redis", 6379), ("mongodb", 27017)},
}
INGRESS = {
    "gateway": {("ingress-nginx", 8000), ("monitoring", 8000)},
    "runner": {("monitoring", 9100)},
    "consumer": {("monitoring", 9100)},
}
# The documented exception: runners and consumers serve /metrics and /health only
# (telemetry/exposition.py), so their readiness is /health too (docs/deploy.md, "Probes").
READINESS_PATH = {"gateway": "/ready", "runner": "/health", "consume": "/health"}


def _drain_seconds(process: str, env: Mapping[str, str], pod: Obj) -> float:
    """How long the process may take to stop after SIGTERM (docs/operations.md, graceful
    shutdown): the pod's terminationGracePeriodSeconds must be longer."""
    if process == "gateway":
        sleep = pod["containers"][0].get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        return sleep + 5 + 5  # the preStop sleep, uvicorn's graceful shutdown, event streams told to reconnect
    if process == "runner":
        grace = env.get("RUNNER_SHUTDOWN_GRACE_SECONDS")
        fields = msgspec.structs.fields(RunnerSettings)
        fallback = next(f.default for f in fields if f.name == "runner_shutdown_grace_seconds")
        return float(grace or fallback) + 10  # then the rest is handed back and the sandboxes removed
    return 10  # a consumer finishes the message in hand


def process_of(container: Obj) -> str:
    args = container.get("args") or container.get("command") or [""]
    return str(args[0])


def deployments(objects: Sequence[Obj]) -> list[Obj]:
    return [o for o in objects if o["kind"] == "Deployment"]


def component(deployment: Obj) -> str:
    return str(deployment["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component", ""))


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    if set(selector) - {"matchLabels"}:
        raise AssertionError(f"selector {selector}: only matchLabels is checked here")
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def container_env(objects: Sequence[Obj], container: Obj) -> dict[str, str]:
    """The environment a container starts with (ConfigMaps, Secrets, literal values)."""
    env: dict[str, str] = {}

    def source(kind: str, name: str) -> dict[str, str]:
        matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
        if not matches:
            return {}
        data = matches[0].get("data", {})
        return {k: base64.b64decode(v).decode() for k, v in data.items()} if kind == "Secret" else dict(data)

    for entry in container.get("envFrom", []):
        if "configMapRef" in entry:
            env.update(source("ConfigMap", entry["configMapRef"]["name"]))
        if "secretRef" in entry:
            env.update(source("Secret", entry["secretRef"]["name"]))
    for entry in container.get("env", []):
        ref = entry.get("valueFrom", {})
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "secretKeyRef" in ref:
            env[entry["name"]] = source("Secret", ref["secretKeyRef"]["name"]).get(ref["secretKeyRef"]["key"], "")
        elif "configMapKeyRef" in ref:
            env[entry["name"]] = source("ConfigMap", ref["configMapKeyRef"]["name"]).get(
                ref["configMapKeyRef"]["key"], ""
            )
        elif "fieldRef" in ref:
            env[entry["name"]] = "pod-name-0"
    return env


def _quantity(value: str | int) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match and (not match[2] or match[2] in units), f"quantity {value!r}"
    return float(match[1]) * units.get(match[2], 1)


def check_pods(objects: Sequence[Obj]) -> list[str]:
    """Non-root, read-only, no privilege, resources, probes, reachable probe ports."""
    problems = []
    for deployment in deployments(objects):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        context = pod.get("securityContext", {})
        if context.get("runAsNonRoot") is not True or context.get("runAsUser") != UID:
            problems.append(f"{name}: the pod does not run as non-root uid {UID}")
        if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: the pod has no RuntimeDefault seccompProfile")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: automountServiceAccountToken is not false (no process calls the API)")
        if pod.get("enableServiceLinks") is not False:
            problems.append(f"{name}: enableServiceLinks is not false (the gateway Service would set GATEWAY_PORT)")
        if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
            problems.append(f"{name}: shares a host namespace")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for volume in volumes.values():
            # The one host path: the sandbox engine's socket folder, for the runners (docs/deploy.md).
            if "hostPath" in volume and (component(deployment), volume["hostPath"]["path"]) != ("runner", ENGINE_DIR):
                problems.append(f"{name}: mounts {volume['hostPath']['path']} from the host")
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            where = f"{name}/{container['name']}"
            process = process_of(container)
            env = container_env(objects, container)
            for mount in container.get("volumeMounts", []):
                if "hostPath" in volumes.get(mount["name"], {}) and not mount.get("readOnly"):
                    problems.append(f"{where}: the host's {mount['mountPath']} is mounted writable")
            if process == "runner" and (
                env.get("SANDBOX_BACKEND") != "docker"
                or not env.get("DOCKER_HOST", "").startswith(f"unix://{ENGINE_DIR}/")
            ):
                # A network engine would be a peer the runner's NetworkPolicy does not allow, and
                # bwrap needs what the pod's security context refuses.
                problems.append(f"{where}: the sandboxes are not the node engine's (SANDBOX_BACKEND, DOCKER_HOST)")
            security = container.get("securityContext", {})
            if security.get("runAsNonRoot") is not True or security.get("runAsUser") != UID:
                problems.append(f"{where}: does not run as non-root uid {UID}")
            if security.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if security.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem is not true")
            if security.get("capabilities", {}).get("drop") != ["ALL"] or security.get("capabilities", {}).get("add"):
                problems.append(f"{where}: capabilities are not drop ALL")
            if security.get("privileged"):
                problems.append(f"{where}: privileged")
            if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                problems.append(f"{where}: no RuntimeDefault seccompProfile")
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(kind, {}):
                        problems.append(f"{where}: no {resource} {kind}")
            for resource in ("cpu", "memory"):
                request, limit = resources.get("requests", {}).get(resource), resources.get("limits", {}).get(resource)
                if request is not None and limit is not None and _quantity(request) > _quantity(limit):
                    problems.append(f"{where}: {resource} request above its limit")
            tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            if not tmp or "emptyDir" not in volumes.get(tmp[0]["name"], {}) or tmp[0].get("readOnly"):
                problems.append(f"{where}: no writable /tmp (an emptyDir) beside the read-only root")
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            host, port_setting = (
                ("GATEWAY_HOST", "GATEWAY_PORT") if process == "gateway" else ("METRICS_HOST", "METRICS_PORT")
            )
            if env.get(host) != "0.0.0.0":
                problems.append(f"{where}: {host} is not 0.0.0.0, so the kubelet cannot reach the probes")
            for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = container.get(probe_name)
                if probe is None:
                    if probe_name != "startupProbe":
                        problems.append(f"{where}: no {probe_name}")
                    continue
                if "exec" in probe:
                    problems.append(f"{where}: {probe_name} uses exec (the image needs no shell or tool)")
                    continue
                http = probe.get("httpGet")
                if http is None:
                    problems.append(f"{where}: {probe_name} is not an HTTP probe")
                    continue
                port = ports.get(http["port"], http["port"])
                if str(port) != env.get(port_setting):
                    problems.append(
                        f"{where}: {probe_name} probes port {port}, the process serves {env.get(port_setting)}"
                    )
                expected = READINESS_PATH.get(process) if probe_name == "readinessProbe" else "/health"
                if http["path"] != expected:
                    problems.append(f"{where}: {probe_name} asks {http['path']}, not {expected}")
    return problems


def check_rollouts(objects: Sequence[Obj]) -> list[str]:
    problems = []
    scaled = {
        o["spec"]["scaleTargetRef"]["name"] for o in objects if o["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")
    }
    for deployment in deployments(objects):
        name = deployment["metadata"]["name"]
        strategy = deployment["spec"].get("strategy", {})
        if strategy.get("type") != "RollingUpdate" or strategy.get("rollingUpdate", {}).get("maxUnavailable") != 0:
            problems.append(f"{name}: rolling update without maxUnavailable 0")
        if name in scaled and "replicas" in deployment["spec"]:
            problems.append(f"{name}: sets replicas, which every apply would reset under its autoscaler")
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            drain = _drain_seconds(process_of(container), container_env(objects, container), pod)
            if pod.get("terminationGracePeriodSeconds", 30) <= drain:
                problems.append(f"{name}: terminationGracePeriodSeconds is not above its drain ({drain:.0f} s)")
    return problems


def check_disruption_budgets(objects: Sequence[Obj]) -> list[str]:
    problems = []
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    for deployment in deployments(objects):
        name = deployment["metadata"]["name"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        mine = [b for b in budgets if selects(b["spec"]["selector"], labels)]
        if len(mine) != 1:
            problems.append(f"{name}: {len(mine)} PodDisruptionBudgets select it, not one")
        elif "maxUnavailable" not in mine[0]["spec"]:
            problems.append(f"{name}: its PodDisruptionBudget uses minAvailable (blocks drains at one replica)")
        else:
            allowed = str(mine[0]["spec"]["maxUnavailable"])
            share = float(allowed[:-1]) / 100 if allowed.endswith("%") else None
            if allowed in ("0", "0%"):
                problems.append(f"{name}: its PodDisruptionBudget allows no disruption (blocks every drain)")
            elif share is not None and share >= 1:
                problems.append(f"{name}: its PodDisruptionBudget allows {allowed} (protects nothing)")
    return problems


_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_CRON_PART = re.compile(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?")


def cron_problems(spec: str) -> list[str]:
    """A five-field schedule as KEDA's cron scaler parses it (robfig/cron: minute, hour, day of
    month, month, day of week), numbers only: names (MON, JAN) are not checked here."""
    fields = spec.split()
    if len(fields) != len(_CRON_FIELDS):
        return [f"{spec!r} has {len(fields)} fields, not 5"]
    out = []
    for text, (what, low, high) in zip(fields, _CRON_FIELDS, strict=True):
        for part in text.split(","):
            match = _CRON_PART.fullmatch(part)
            numbers = [int(n) for n in (match.group(2, 3) if match else ()) if n is not None]
            if not match or any(not low <= n <= high for n in numbers) or numbers != sorted(numbers):
                out.append(f"{spec!r}: {what} {part!r} is not {low}-{high}")
    return out


def check_schedules(objects: Sequence[Obj]) -> list[str]:
    """Every cron trigger is one KEDA can run: its schedules parse, its time zone exists, and the
    count it asks for is above the floor (or it does nothing) and within the maximum."""
    problems = []
    for scaled in (o for o in objects if o["kind"] == "ScaledObject"):
        name, spec = scaled["metadata"]["name"], scaled["spec"]
        for trigger in (t for t in spec["triggers"] if t["type"] == "cron"):
            meta = trigger["metadata"]
            where = f"{name}: cron trigger {trigger.get('name')}"
            for key in ("start", "end"):
                problems += [f"{where}: {p}" for p in cron_problems(meta.get(key, ""))]
            if meta.get("start") == meta.get("end"):
                problems.append(f"{where}: starts and ends at the same time")
            try:
                zoneinfo.ZoneInfo(meta.get("timezone", ""))
            except (ValueError, zoneinfo.ZoneInfoNotFoundError):
                problems.append(f"{where}: time zone {meta.get('timezone')!r} is not an IANA name")
            desired = int(meta.get("desiredReplicas", "0"))
            if desired <= spec.get("minReplicaCount", 0):
                problems.append(f"{where}: holds {desired}, not above the floor of {spec.get('minReplicaCount', 0)}")
            if desired > spec.get("maxReplicaCount", 100):
                problems.append(f"{where}: holds {desired}, above the maximum of {spec.get('maxReplicaCount', 100)}")
    return problems


def _peer(peer: Obj) -> str:
    if "ipBlock" in peer:
        return f"ipBlock {peer['ipBlock']['cidr']}"
    if "namespaceSelector" in peer:
        labels = peer["namespaceSelector"].get("matchLabels", {})
        return str(labels.get("kubernetes.io/metadata.name", f"namespaces {labels or 'all'}"))
    return "own namespace"


def _peers(rules: Sequence[Obj], direction: str) -> set[tuple[str, int | str]]:
    """(peer, port) of each rule: a namespace's name, 'anywhere' and 'any' where a rule leaves
    the peer or the port open."""
    reached: set[tuple[str, int | str]] = set()
    for rule in rules:
        peers = [_peer(p) for p in rule.get(direction) or []] or ["anywhere"]
        ports: list[int | str] = [p.get("port", "any") for p in rule.get("ports") or [{}]]
        reached |= {(peer, port) for peer in peers for port in ports}
    return reached


def check_network_policies(objects: Sequence[Obj]) -> list[str]:
    problems = []
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    deny = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    if not deny:
        problems.append("no default-deny NetworkPolicy (all ingress and egress) in the namespace")
    for deployment in deployments(objects):
        name, role = deployment["metadata"]["name"], component(deployment)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        mine = [p for p in policies if p["spec"]["podSelector"] != {} and selects(p["spec"]["podSelector"], labels)]
        if not mine:
            problems.append(f"{name}: no NetworkPolicy selects it")
            continue
        egress = set().union(*(_peers(p["spec"].get("egress", []), "to") for p in mine))
        ingress = set().union(*(_peers(p["spec"].get("ingress", []), "from") for p in mine))
        for peer, port in sorted(egress - EGRESS.get(role, set()), key=str):
            problems.append(f"{name}: may reach {peer}:{port}")
        for peer, port in sorted(ingress - INGRESS.get(role, set()), key=str):
            problems.append(f"{name}: accepts connections from {peer} on {port}")
    return problems


def check_autoscaling(objects: Sequence[Obj], consumers: Mapping[str, Sequence[streams.Durable]]) -> list[str]:
    """Every consumer of the registry (and the runner) has a Deployment and a ScaledObject on its
    own durables' lag; the gateway an HPA on CPU."""
    problems = []
    by_args = {
        tuple(c.get("args", [])): d for d in deployments(objects) for c in d["spec"]["template"]["spec"]["containers"]
    }
    scaled_objects = {o["spec"]["scaleTargetRef"]["name"]: o for o in objects if o["kind"] == "ScaledObject"}
    expected: dict[tuple[str, ...], list[streams.Durable]] = {
        ("runner",): [d for d in streams.DURABLES if d.name == streams.RUNNER_CONSUMER]
    }
    for process, durables in consumers.items():
        # The advisories durable is left out on purpose (its ScaledObject's comment says why).
        expected[("consume", process)] = [d for d in durables if d.stream != streams.ADVISORIES]
    for args in by_args:
        if args[:1] == ("consume",) and args not in expected:
            problems.append(f"a Deployment runs `coderunner {' '.join(args)}`, which the registry does not know")
    for args, durables in expected.items():
        deployment = by_args.get(args)
        if deployment is None:
            problems.append(f"no Deployment runs `coderunner {' '.join(args)}`")
            continue
        name = deployment["metadata"]["name"]
        scaled = scaled_objects.get(name)
        if scaled is None:
            problems.append(f"{name}: no ScaledObject")
            continue
        triggers = {}
        for trigger in scaled["spec"]["triggers"]:
            if trigger["type"] == "cron":
                continue  # a floor by the clock beside the lag (check_schedules)
            meta = trigger["metadata"]
            if trigger["type"] != "nats-jetstream" or meta.get("natsServerMonitoringEndpoint") != NATS_MONITORING:
                problems.append(f"{name}: trigger {trigger.get('name')} is not nats-jetstream on {NATS_MONITORING}")
            if meta.get("account") != "$G":
                problems.append(f"{name}: trigger {trigger.get('name')} not on the default account $G")
            triggers[(meta.get("stream"), meta.get("consumer"))] = meta.get("lagThreshold")
        wanted = {(d.stream, d.name) for d in durables}
        for stream, consumer in sorted(wanted - set(triggers)):
            problems.append(f"{name}: no trigger on the lag of {stream}/{consumer}")
        for stream, consumer in sorted(set(triggers) - wanted, key=str):
            problems.append(f"{name}: a trigger on {stream}/{consumer}, which it does not consume")
        if args == ("runner",) and triggers.get((streams.SUBMISSIONS, streams.RUNNER_CONSUMER)) != "50":
            problems.append(f"{name}: runners do not scale at 50 pending per replica (the seed)")
    gateway = by_args.get(("gateway",))
    hpas = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    cpu70 = [
        h
        for h in hpas
        if gateway is not None
        and h["spec"]["scaleTargetRef"]["name"] == gateway["metadata"]["name"]
        and any(
            m["type"] == "Resource"
            and m["resource"]["name"] == "cpu"
            and m["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
            for m in h["spec"].get("metrics", [])
        )
    ]
    if not cpu70:
        problems.append("gateway: no HorizontalPodAutoscaler at 70 % CPU (the seed)")
    return problems


def check_ingress(objects: Sequence[Obj]) -> list[str]:
    problems = []
    ingresses = [o for o in objects if o["kind"] == "Ingress"]
    if not ingresses:
        problems.append("no Ingress")
    for ingress in ingresses:
        name = ingress["metadata"]["name"]
        notes = ingress["metadata"].get("annotations", {})
        if notes.get("nginx.ingress.kubernetes.io/proxy-buffering") != "off":
            problems.append(f"Ingress {name}: response buffering is not off (event streams would stall)")
        for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
            # An hour: only a dead connection is cut, never a quiet event stream.
            if int(notes.get(f"nginx.ingress.kubernetes.io/{timeout}", "60")) < 3600:
                problems.append(f"Ingress {name}: {timeout} under an hour")
        if ingress["spec"].get("ingressClassName") != "nginx":
            problems.append(f"Ingress {name}: not for ingress-nginx, whose annotations these are")
    return problems


def check_references(objects: Sequence[Obj]) -> list[str]:
    """Every name an object refers to exists, in its namespace; every object is in the namespace."""
    problems = []
    index = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects}
    for obj in objects:
        name = f"{obj['kind']} {obj['metadata']['name']}"
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] not in CLUSTER_SCOPED and namespace != NAMESPACE:
            problems.append(f"{name}: in namespace {namespace}, not {NAMESPACE}")
        for kind, holder, key in _references(obj):
            target = index.get((kind, namespace, holder[key]))
            if target is None:
                problems.append(f"{name}: {kind} {holder[key]} does not exist in {namespace}")
            elif "key" in holder and holder["key"] not in target.get("data", {}):
                problems.append(f"{name}: {kind} {holder[key]} has no key {holder['key']}")
        targets = []
        if obj["kind"] in ("ScaledObject", "HorizontalPodAutoscaler"):
            targets.append(("Deployment", obj["spec"]["scaleTargetRef"]["name"]))
        for rule in obj["spec"].get("rules", []) if obj["kind"] == "Ingress" else []:
            for path in rule["http"]["paths"]:
                service = path["backend"]["service"]
                targets.append(("Service", service["name"]))
                found = index.get(("Service", namespace, service["name"]))
                if found and not any(p.get("name") == service["port"].get("name") for p in found["spec"]["ports"]):
                    problems.append(f"{name}: Service {service['name']} has no port {service['port']}")
        if obj["kind"] == "Service":
            backends = [
                d
                for d in deployments(objects)
                if selects({"matchLabels": obj["spec"]["selector"]}, d["spec"]["template"]["metadata"]["labels"])
            ]
            ports = {
                p.get("name")
                for d in backends
                for c in d["spec"]["template"]["spec"]["containers"]
                for p in c.get("ports", [])
            }
            if not backends or any(p["targetPort"] not in ports for p in obj["spec"]["ports"]):
                problems.append(f"{name}: selects no pod serving its target ports")
        problems += [
            f"{name}: {kind} {ref} does not exist" for kind, ref in targets if (kind, namespace, ref) not in index
        ]
    return problems


def check_settings(objects: Sequence[Obj]) -> list[str]:
    """Every variable a container gets is a setting of its process: no typo, and no secret it has
    no use for (the runner never gets the signing key or the database URLs)."""
    problems = []
    for deployment in deployments(objects):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            settings = SETTINGS.get(process_of(container))
            if settings is None:
                problems.append(f"{deployment['metadata']['name']}: runs no known process")
                continue
            names = {f.name.upper() for f in msgspec.structs.fields(settings)}
            for variable in sorted(set(container_env(objects, container)) - names):
                problems.append(f"{deployment['metadata']['name']}: {variable} is not a setting of {settings.__name__}")
    return problems


def problems(
    objects: Sequence[Obj], consumers: Mapping[str, Sequence[streams.Durable]] = streams.CONSUMERS
) -> list[str]:
    return [
        *check_pods(objects),
        *check_rollouts(objects),
        *check_disruption_budgets(objects),
        *check_network_policies(objects),
        *check_autoscaling(objects, consumers),
        *check_ingress(objects),
        *check_references(objects),
        *check_settings(objects),
        *check_schedules(objects),
    ]


# --- Spot runners and off-hours scaling (production) ---------------------------------------------

# How each provider labels its spot (preemptible) nodes, and this project's own label for clusters
# that label their pools themselves (docs/deploy.md, "Spot runners and off-hours scaling").
SPOT_LABELS = {
    ("coderunner-capacity-type", "spot"),
    ("cloud.google.com/gke-spot", "true"),  # GKE
    ("eks.amazonaws.com/capacityType", "SPOT"),  # EKS managed node groups
    ("karpenter.sh/capacity-type", "spot"),  # Karpenter (EKS and others)
    ("kubernetes.azure.com/scalesetpriority", "spot"),  # AKS
}
# The NoSchedule taints spot nodes carry: AKS's on every spot pool, GKE's in Autopilot (optional
# in Standard), ours when a cluster taints its own. EKS and Karpenter taint none by default.
SPOT_TAINTS = {
    ("coderunner-capacity-type", "spot"),
    ("cloud.google.com/gke-spot", "true"),
    ("kubernetes.azure.com/scalesetpriority", "spot"),
}
# What a reclaimed node gives its pods: GKE's graceful node shutdown gives them the first 15 s of
# Compute Engine's 30 s notice (critical system pods the last 15), Azure's eviction notice is 30 s,
# EC2's interruption notice 2 minutes. The runner's drain must fit the shortest.
SPOT_NOTICE_SECONDS = {"GKE": 15, "AKS": 30, "EKS": 120}
SANDBOX_NODE_LABEL = ("coderunner-sandbox-engine", "true")
# docs/capacity.md, "Sizing at the seed's peak": runners and their sandboxes need 2.4 provisioned
# cores at 11.6 jobs/s. The school-hours floor holds at least that.
PEAK_RUNNER_CORES = 2.4


def _tolerates(tolerations: Sequence[Obj], key: str, value: str) -> bool:
    return any(
        t.get("key") == key
        and (t.get("operator") == "Exists" or t.get("value") == value)
        and t.get("effect") in (None, "", "NoSchedule")
        for t in tolerations
    )


def _node_preferences(pod: Obj) -> set[tuple[str, str]]:
    """(label, value) pairs the pod's node affinity asks for, preferred or required."""
    affinity = pod.get("affinity", {}).get("nodeAffinity", {})
    terms = [p["preference"] for p in affinity.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
    terms += affinity.get("requiredDuringSchedulingIgnoredDuringExecution", {}).get("nodeSelectorTerms", [])
    return {
        (e["key"], v)
        for term in terms
        for e in term.get("matchExpressions", [])
        if e["operator"] == "In"
        for v in e["values"]
    }


def runner_deployment(objects: Sequence[Obj]) -> Obj:
    (runner,) = (d for d in deployments(objects) if component(d) == "runner")
    return runner


def check_spot_runners(objects: Sequence[Obj]) -> list[str]:
    """Runners go on spot nodes of every provider, still only on sandbox nodes, and drain within
    the shortest notice of a reclaim; their budget lets a node's runners go together."""
    problems = []
    deployment = runner_deployment(objects)
    name, pod = deployment["metadata"]["name"], deployment["spec"]["template"]["spec"]
    if pod.get("nodeSelector", {}).get(SANDBOX_NODE_LABEL[0]) != SANDBOX_NODE_LABEL[1]:
        problems.append(f"{name}: not kept to sandbox nodes (nodeSelector {'='.join(SANDBOX_NODE_LABEL)})")
    for key, value in sorted(SPOT_TAINTS):
        if not _tolerates(pod.get("tolerations", []), key, value):
            problems.append(f"{name}: does not tolerate the spot taint {key}={value}:NoSchedule")
    for key, value in sorted(SPOT_LABELS - _node_preferences(pod)):
        problems.append(f"{name}: no node affinity for spot nodes labelled {key}={value}")
    shortest = min(SPOT_NOTICE_SECONDS.values())
    for container in pod["containers"]:
        drain = _drain_seconds(process_of(container), container_env(objects, container), pod)
        if drain > shortest:
            problems.append(
                f"{name}: its drain ({drain:.0f} s) does not fit the {shortest} s a reclaimed spot node gives it"
            )
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for budget in (o for o in objects if o["kind"] == "PodDisruptionBudget" and selects(o["spec"]["selector"], labels)):
        allowed = budget["spec"].get("maxUnavailable")
        if not str(allowed).endswith("%"):
            problems.append(
                f"{name}: its PodDisruptionBudget lets {allowed} go at a time, not a share: a reclaimed node's "
                "other runners would wait for replacements and be killed instead of drained"
            )
    return problems


def check_off_hours(objects: Sequence[Obj]) -> list[str]:
    """Runners scale on the queue and by the clock: a school-hours floor that covers the capacity
    model's peak, a lower floor outside it, never none."""
    problems = []
    deployment = runner_deployment(objects)
    name = deployment["metadata"]["name"]
    (scaled,) = (o for o in objects if o["kind"] == "ScaledObject" and o["spec"]["scaleTargetRef"]["name"] == name)
    spec = scaled["spec"]
    kinds = [t["type"] for t in spec["triggers"]]
    if "nats-jetstream" not in kinds:
        problems.append(f"{name}: no queue trigger beside the schedule")
    if "cron" not in kinds:
        problems.append(f"{name}: no cron trigger (a floor of runners in school hours)")
    floor = spec.get("minReplicaCount", 0)
    if floor < 1:
        problems.append(f"{name}: scales to {floor} off-hours (a submission would wait for a runner and its node)")
    cores = _quantity(deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"])
    for trigger in (t for t in spec["triggers"] if t["type"] == "cron"):
        held = int(trigger["metadata"].get("desiredReplicas", "0")) * cores
        if held + 1e-9 < PEAK_RUNNER_CORES:
            problems.append(
                f"{name}: school hours hold {held:.2f} cores of runners, under the {PEAK_RUNNER_CORES} the "
                "seed's peak needs (docs/capacity.md)"
            )
    return problems


def production_problems(objects: Sequence[Obj]) -> list[str]:
    return [*problems(objects), *check_spot_runners(objects), *check_off_hours(objects)]


# --- The image -----------------------------------------------------------------------------------


def wheel_packages() -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in joined.splitlines() if line.strip()
    ]


def dockerfile_problems(text: str, packages: Sequence[str]) -> list[str]:
    out = []
    instructions = dockerfile_instructions(text)
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in instructions:
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args))
    copied = {
        args.split()[0]
        for stage in stages
        for keyword, args in stage
        if keyword == "COPY" and not args.startswith("--")
    }
    out += [f"the Dockerfile does not copy {p}, a package of the wheel" for p in packages if p not in copied]
    final = stages[-1] if stages else []
    users = [args for keyword, args in final if keyword == "USER"]
    if users[-1:] != [f"{UID}:{UID}"]:
        out.append(f"the final stage does not run as {UID}:{UID} (numeric, so that runAsNonRoot can check it)")
    for keyword, args in final:
        if keyword in ("ENTRYPOINT", "CMD", "HEALTHCHECK") and not args.startswith("["):
            out.append(f"{keyword} {args}: shell form needs a shell at run time")
    if not any(k == "ENTRYPOINT" for k, _ in final):
        out.append("no ENTRYPOINT")
    bases = [args.split()[0] for keyword, args in instructions if keyword == "FROM"]
    if len(set(bases)) != 1:
        out.append(f"the stages start from different images {bases}: the virtualenv copied across needs the same")
    return out


# --- The NATS chart values -----------------------------------------------------------------------


def nats_values_problems(values: Mapping[str, Any], defaults: Mapping[str, Any], path: str = "") -> list[str]:
    """Every key is one of the chart's (whose defaults name them all) with a value of its type; an
    empty map in the defaults is free-form (Kubernetes fields, env, merge/patch)."""
    out = []
    for key, value in values.items():
        where = f"{path}.{key}".lstrip(".")
        if key not in defaults:
            out.append(f"{where} is not a key of the NATS chart {NATS_CHART_VERSION}")
            continue
        default = defaults[key]
        if isinstance(default, dict) and default:
            if not isinstance(value, dict):
                out.append(f"{where} must be a map")
            else:
                out += nats_values_problems(value, default, where)
        elif default is not None and value is not None and type(value) is not type(default):
            out.append(f"{where} must be a {type(default).__name__}, like the chart's default")
    return out


def nats_cluster_problems(values: Mapping[str, Any]) -> list[str]:
    def at(*path: str) -> Any:
        node: Any = values
        for key in path:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        return node

    out = []
    if at("config", "cluster", "enabled") is not True or at("config", "cluster", "replicas") != 3:
        out.append("NATS is not a cluster of 3 (streams at R3 need three servers)")
    storage = [
        ("config", "jetstream"),
        ("config", "jetstream", "fileStore"),
        ("config", "jetstream", "fileStore", "pvc"),
    ]
    if any(at(*path, "enabled") is not True for path in storage):
        out.append("JetStream is not on file storage with a PVC")
    # KEDA's endpoint is the chart's headless service (its default name for the release `nats`).
    port = int(NATS_MONITORING.rsplit(":", 1)[1])
    if (
        at("config", "monitor", "port") not in ({}, port)
        or values.get("fullnameOverride")
        or at("headlessService", "name")
    ):
        out.append(f"KEDA's endpoint {NATS_MONITORING} is not the chart's headless service and monitoring port")
    return out


# === Tests =======================================================================================


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_against_the_kubernetes_schemas(overlay: str, version: str) -> None:
    objects = rendered(overlay)
    errors = [e for o in objects if o["kind"] not in CRDS for e in kubernetes_errors(o, version)]
    assert not errors, "\n".join(errors)
    kinds = {o["kind"] for o in objects}
    assert {
        "Deployment",
        "Service",
        "Ingress",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ScaledObject",
        "ConfigMap",
        "Secret",
        "Namespace",
    } <= kinds


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_custom_resource_is_valid_against_its_vendored_crd(overlay: str) -> None:
    custom = [o for o in rendered(overlay) if o["kind"] in CRDS]
    assert custom
    errors = [e for o in custom for e in crd_errors(o)]
    assert not errors, "\n".join(errors)


def test_crd_rules_are_all_known() -> None:
    """jsonschema does not run CEL: every rule of a vendored CRD has its hand-written check."""
    for kind in CRDS:
        for version in crd(kind)["spec"]["versions"]:
            rules = {rule for _, rule in cel_rules(version["schema"]["openAPIV3Schema"])}
            assert rules <= set(CEL_RULES), rules - set(CEL_RULES)
            # A rule below a list (path "*") would not be evaluated by crd_errors.
            assert all("*" not in path for path, _ in cel_rules(version["schema"]["openAPIV3Schema"]))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_rendered_platform_keeps_every_rule(overlay: str) -> None:
    found = problems(rendered(overlay))
    assert not found, "\n".join(found)


def test_production_runs_runners_on_spot_nodes_by_the_clock_and_the_queue() -> None:
    """Spot tolerations and affinity, a drain within a reclaim's notice, a budget that lets a
    node's runners drain together, a cron floor beside the queue trigger (docs/deploy.md)."""
    objects = rendered("production")
    found = production_problems(objects)
    assert not found, "\n".join(found)
    runner = pod(objects, "runner")
    env = container_env(objects, runner["containers"][0])
    drain = _drain_seconds("runner", env, runner)
    assert drain <= min(SPOT_NOTICE_SECONDS.values())
    assert drain < runner["terminationGracePeriodSeconds"]
    scaled = find(objects, "ScaledObject", "runner")["spec"]
    assert sorted(t["type"] for t in scaled["triggers"]) == ["cron", "nats-jetstream"]
    assert scaled["minReplicaCount"] < int(schedule(objects, "runner")["metadata"]["desiredReplicas"])
    budget = find(objects, "PodDisruptionBudget", "runner")
    assert selects(budget["spec"]["selector"], deployment(objects, "runner")["spec"]["template"]["metadata"]["labels"])
    # The development overlay keeps the base: no spot, no schedule.
    dev = rendered("dev")
    assert check_spot_runners(dev) and check_off_hours(dev)


def test_base_files_are_valid_each_on_its_own() -> None:
    """The base, file by file, as `kubectl apply --dry-run` would take each one."""
    errors = []
    for path in sorted((K8S / "base").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for obj in yaml_documents(path):
            errors += crd_errors(obj) if obj["kind"] in CRDS else kubernetes_errors(obj, KUBERNETES_VERSIONS[0])
    assert not errors, "\n".join(errors)


def test_production_pins_its_images_and_serves_tls() -> None:
    objects = rendered("production")
    for deployment in deployments(objects):
        for container in containers(deployment):
            assert re.fullmatch(r"[a-z0-9.-]+/[a-z0-9/._-]+:[0-9][\w.-]*", container["image"]), container["image"]
    sandbox = generated(objects, "ConfigMap", "runner-config")["data"]["SANDBOX_IMAGE"]
    assert not sandbox.endswith(":latest"), sandbox
    (ingress,) = (o for o in objects if o["kind"] == "Ingress")
    assert ingress["spec"]["tls"][0]["hosts"] == [r["host"] for r in ingress["spec"]["rules"]]


def test_production_streams_are_replicated_on_every_nats_server() -> None:
    config = generated(rendered("production"), "ConfigMap", "coderunner-config")["data"]
    values = yaml.safe_load((K8S / "nats" / "values.yaml").read_text())
    assert config["STREAM_REPLICAS"] == str(values["config"]["cluster"]["replicas"]) == "3"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_process_starts_with_the_rendered_settings(overlay: str) -> None:
    """The environment each container gets converts into its settings (with real secrets)."""
    objects = rendered(overlay)
    for deployment in deployments(objects):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            env = container_env(objects, container)
            for secret in ("JWT_SECRET", "METRICS_TOKEN"):
                if secret in env:
                    env[secret] = secrets.token_urlsafe(48)
            load(SETTINGS[process_of(container)], env)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_example_secrets_are_refused_by_every_process(overlay: str) -> None:
    """secrets.example.env is a template: a platform started with it does not start."""
    objects = rendered(overlay)
    for deployment in deployments(objects):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            with pytest.raises(SettingsError) as refused:
                load(SETTINGS[process_of(container)], container_env(objects, container))
            named = {p.split()[0] for p in refused.value.problems}
            assert "METRICS_TOKEN" in named
            assert ("JWT_SECRET" in named) == (process_of(container) == "gateway")


def test_the_real_secrets_files_are_git_ignored_and_the_example_lists_what_is_used() -> None:
    for overlay in OVERLAYS:
        path = f"deploy/k8s/overlays/{overlay}/secrets.env"
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, check=False).returncode == 0, path
    example = set(_env_file(K8S / "secrets.example.env"))
    used = {
        holder["key"]
        for o in rendered("production")
        for kind, holder, _ in _references(o)
        if kind == "Secret" and "key" in holder
    }
    assert example == used


def test_the_image_copies_every_package_and_runs_without_root_or_shell() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert not dockerfile_problems(text, wheel_packages())


def test_nats_values_use_only_the_charts_keys_and_make_a_cluster() -> None:
    values = yaml.safe_load((K8S / "nats" / "values.yaml").read_text())
    defaults = yaml.safe_load((K8S / "nats" / f"chart-defaults-{NATS_CHART_VERSION}.yaml").read_text())
    assert not nats_values_problems(values, defaults)
    assert not nats_cluster_problems(values)
    header = (K8S / "nats" / "values.yaml").read_text()
    deploy_doc = (ROOT / "docs" / "deploy.md").read_text()
    for text in (header, deploy_doc):
        assert f"--version {NATS_CHART_VERSION} --namespace nats" in text
        assert "helm upgrade --install nats nats/nats" in text


# --- Each rule fails once its protection is removed ----------------------------------------------


def deployment(objects: list[Obj], name: str) -> Obj:
    return find(objects, "Deployment", name)


def container(objects: list[Obj], name: str) -> Obj:
    return deployment(objects, name)["spec"]["template"]["spec"]["containers"][0]


def pod(objects: list[Obj], name: str) -> Obj:
    return deployment(objects, name)["spec"]["template"]["spec"]


def drop(objects: list[Obj], kind: str, name: str) -> None:
    objects.remove(find(objects, kind, name))


def set_env(objects: list[Obj], name: str, variable: str, value: str) -> None:
    entry = next(e for e in container(objects, name)["env"] if e["name"] == variable)
    entry.clear()
    entry.update(name=variable, value=value)


def trigger(objects: list[Obj], name: str, durable: str) -> Obj:
    scaled = find(objects, "ScaledObject", name)
    return next(t for t in scaled["spec"]["triggers"] if t["metadata"].get("consumer") == durable)


def schedule(objects: list[Obj], name: str) -> Obj:
    scaled = find(objects, "ScaledObject", name)
    return next(t for t in scaled["spec"]["triggers"] if t["type"] == "cron")


REMOVALS: list[tuple[str, Callable[[list[Obj]], object], str]] = [
    (
        "read-only root",
        lambda o: container(o, "gateway")["securityContext"].pop("readOnlyRootFilesystem"),
        "gateway/gateway: readOnlyRootFilesystem is not true",
    ),
    (
        "non-root container",
        lambda o: container(o, "runner")["securityContext"].pop("runAsNonRoot"),
        "runner/runner: does not run as non-root",
    ),
    (
        "non-root pod",
        lambda o: pod(o, "consumer-grading")["securityContext"].update(runAsUser=0),
        "consumer-grading: the pod does not run as non-root",
    ),
    (
        "drop ALL",
        lambda o: container(o, "consumer-grading")["securityContext"].pop("capabilities"),
        "capabilities are not drop ALL",
    ),
    (
        "no privilege escalation",
        lambda o: container(o, "runner")["securityContext"].update(allowPrivilegeEscalation=True),
        "allowPrivilegeEscalation is not false",
    ),
    (
        "pod seccomp",
        lambda o: pod(o, "gateway")["securityContext"].pop("seccompProfile"),
        "gateway: the pod has no RuntimeDefault seccompProfile",
    ),
    (
        "container seccomp",
        lambda o: container(o, "consumer-caching")["securityContext"].pop("seccompProfile"),
        "consumer-caching/consumer: no RuntimeDefault seccompProfile",
    ),
    (
        "no API token",
        lambda o: pod(o, "runner").pop("automountServiceAccountToken"),
        "runner: automountServiceAccountToken",
    ),
    ("no service links", lambda o: pod(o, "gateway").pop("enableServiceLinks"), "gateway: enableServiceLinks"),
    ("limits", lambda o: container(o, "runner")["resources"].pop("limits"), "runner/runner: no cpu limits"),
    (
        "requests",
        lambda o: container(o, "consumer-caching")["resources"].pop("requests"),
        "consumer-caching/consumer: no memory requests",
    ),
    (
        "liveness probe",
        lambda o: container(o, "consumer-progress").pop("livenessProbe"),
        "consumer-progress/consumer: no livenessProbe",
    ),
    (
        "readiness probe",
        lambda o: container(o, "gateway").pop("readinessProbe"),
        "gateway/gateway: no readinessProbe",
    ),
    (
        "readiness on /ready",
        lambda o: container(o, "gateway")["readinessProbe"]["httpGet"].update(path="/health"),
        "readinessProbe asks /health, not /ready",
    ),
    (
        "no exec probe",
        lambda o: container(o, "runner").update(livenessProbe={"exec": {"command": ["true"]}}),
        "livenessProbe uses exec",
    ),
    (
        "probe reachable",
        lambda o: set_env(o, "consumer-grading", "METRICS_HOST", "127.0.0.1"),
        "METRICS_HOST is not 0.0.0.0",
    ),
    (
        "probe port",
        lambda o: set_env(o, "runner", "METRICS_PORT", "9200"),
        "livenessProbe probes port 9100, the process serves 9200",
    ),
    ("writable /tmp", lambda o: container(o, "gateway").pop("volumeMounts"), "gateway/gateway: no writable /tmp"),
    (
        "maxUnavailable 0",
        lambda o: deployment(o, "gateway")["spec"]["strategy"]["rollingUpdate"].update(maxUnavailable=1),
        "gateway: rolling update without maxUnavailable 0",
    ),
    (
        "drain time",
        lambda o: pod(o, "runner").update(terminationGracePeriodSeconds=15),
        "runner: terminationGracePeriodSeconds is not above its drain (15 s)",
    ),
    (
        "autoscaler owns replicas",
        lambda o: deployment(o, "runner")["spec"].update(replicas=3),
        "runner: sets replicas",
    ),
    (
        "a budget",
        lambda o: drop(o, "PodDisruptionBudget", "consumer-grading"),
        "consumer-grading: 0 PodDisruptionBudgets",
    ),
    (
        "budget never blocks",
        lambda o: find(o, "PodDisruptionBudget", "runner").update(
            spec={"minAvailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "runner"}}}
        ),
        "runner: its PodDisruptionBudget uses minAvailable",
    ),
    (
        "no host path but the engine's",
        lambda o: pod(o, "gateway")["volumes"].append({"name": "host", "hostPath": {"path": "/var/run"}}),
        "gateway: mounts /var/run from the host",
    ),
    (
        "engine socket read-only",
        lambda o: next(m for m in container(o, "runner")["volumeMounts"] if m["name"] == "engine").pop("readOnly"),
        "runner/runner: the host's /run/coderunner-engine is mounted writable",
    ),
    (
        "sandboxes in the node's engine",
        lambda o: generated(o, "ConfigMap", "runner-config")["data"].update(DOCKER_HOST="tcp://engine:2375"),
        "runner/runner: the sandboxes are not the node engine's",
    ),
    (
        "requests within limits",
        lambda o: container(o, "consumer-caching")["resources"]["requests"].update(memory="2Gi"),
        "consumer-caching/consumer: memory request above its limit",
    ),
    (
        "no host namespace",
        lambda o: pod(o, "consumer-progress").update(hostNetwork=True),
        "consumer-progress: shares a host namespace",
    ),
    (
        "the Service reaches the gateway",
        lambda o: find(o, "Service", "gateway")["spec"]["selector"].update({"app.kubernetes.io/name": "gateways"}),
        "Service gateway: selects no pod serving its target ports",
    ),
    (
        "ingress-nginx's annotations",
        lambda o: find(o, "Ingress", "coderunner")["spec"].update(ingressClassName="traefik"),
        "not for ingress-nginx",
    ),
    ("default deny", lambda o: drop(o, "NetworkPolicy", "default-deny"), "no default-deny NetworkPolicy"),
    ("a policy per pod", lambda o: drop(o, "NetworkPolicy", "runner"), "runner: no NetworkPolicy selects it"),
    (
        "runners reach NATS only",
        lambda o: find(o, "NetworkPolicy", "runner")["spec"]["egress"].append(
            {
                "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mongodb"}}}],
                "ports": [{"protocol": "TCP", "port": 27017}],
            }
        ),
        "runner: may reach mongodb:27017",
    ),
    (
        "no open egress",
        lambda o: find(o, "NetworkPolicy", "consumers")["spec"]["egress"].append({}),
        "consumer-caching: may reach anywhere:any",
    ),
    (
        "gateway behind the ingress",
        lambda o: find(o, "NetworkPolicy", "gateway")["spec"]["ingress"][0].pop("from"),
        "gateway: accepts connections from anywhere on 8000",
    ),
    (
        "a Deployment per consumer",
        lambda o: drop(o, "Deployment", "consumer-progress"),
        "no Deployment runs `coderunner consume progress`",
    ),
    (
        "a ScaledObject per consumer",
        lambda o: drop(o, "ScaledObject", "consumer-grading"),
        "consumer-grading: no ScaledObject",
    ),
    (
        "a trigger per durable",
        lambda o: find(o, "ScaledObject", "consumer-caching")["spec"]["triggers"].remove(
            trigger(o, "consumer-caching", "caching-problems")
        ),
        "no trigger on the lag of PROBLEMS/caching-problems",
    ),
    (
        "runners at 50",
        lambda o: trigger(o, "runner", "runner")["metadata"].update(lagThreshold="100"),
        "runners do not scale at 50",
    ),
    (
        "KEDA finds NATS",
        lambda o: trigger(o, "runner", "runner")["metadata"].update(natsServerMonitoringEndpoint="nats.nats.svc:8222"),
        "is not nats-jetstream on",
    ),
    (
        "gateway on CPU",
        lambda o: drop(o, "HorizontalPodAutoscaler", "gateway"),
        "gateway: no HorizontalPodAutoscaler at 70 % CPU",
    ),
    (
        "SSE unbuffered",
        lambda o: find(o, "Ingress", "coderunner")["metadata"]["annotations"].pop(
            "nginx.ingress.kubernetes.io/proxy-buffering"
        ),
        "response buffering is not off",
    ),
    (
        "SSE not cut",
        lambda o: find(o, "Ingress", "coderunner")["metadata"]["annotations"].update(
            {"nginx.ingress.kubernetes.io/proxy-read-timeout": "60"}
        ),
        "proxy-read-timeout under an hour",
    ),
    (
        "references resolve",
        lambda o: next(e for e in container(o, "gateway")["env"] if e["name"] == "JWT_SECRET")["valueFrom"][
            "secretKeyRef"
        ].update(key="JWT"),
        "has no key JWT",
    ),
    (
        "one namespace",
        lambda o: generated(o, "Secret", "coderunner-secrets")["metadata"].pop("namespace"),
        "in namespace None",
    ),
    (
        "runner gets no signing key",
        lambda o: container(o, "runner")["env"].append(
            {
                "name": "JWT_SECRET",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": generated(o, "Secret", "coderunner-secrets")["metadata"]["name"],
                        "key": "JWT_SECRET",
                    }
                },
            }
        ),
        "runner: JWT_SECRET is not a setting of RunnerSettings",
    ),
    (
        "no misspelt setting",
        lambda o: generated(o, "ConfigMap", "runner-config")["data"].update(SANDBOX_BACKED="docker"),
        "runner: SANDBOX_BACKED is not a setting",
    ),
]


@pytest.mark.parametrize(("removal", "expected"), [(r[1], r[2]) for r in REMOVALS], ids=[r[0] for r in REMOVALS])
def test_each_rule_fails_without_its_protection(removal: Callable[[list[Obj]], object], expected: str) -> None:
    objects = rendered("production")
    removal(objects)
    found = problems(objects)
    assert any(expected in p for p in found), "\n".join(found) or "no problem found"


def _untolerate(objects: list[Obj], key: str) -> None:
    tolerations = pod(objects, "runner")["tolerations"]
    tolerations.remove(next(t for t in tolerations if t["key"] == key))


def _unprefer(objects: list[Obj], key: str) -> None:
    terms = pod(objects, "runner")["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    terms.remove(next(t for t in terms if t["preference"]["matchExpressions"][0]["key"] == key))


# The production overlay's own rules (spot runners, the floors by the clock), each removed once.
SPOT_REMOVALS: list[tuple[str, Callable[[list[Obj]], object], str]] = [
    (
        "drain fits a reclaim",
        lambda o: generated(o, "ConfigMap", "runner-config")["data"].update(RUNNER_SHUTDOWN_GRACE_SECONDS="10"),
        "runner: its drain (20 s) does not fit the 15 s a reclaimed spot node gives it",
    ),
    (
        "grace above the drain",
        lambda o: pod(o, "runner").update(terminationGracePeriodSeconds=10),
        "runner: terminationGracePeriodSeconds is not above its drain (15 s)",
    ),
    (
        "tolerates AKS's spot taint",
        lambda o: _untolerate(o, "kubernetes.azure.com/scalesetpriority"),
        "runner: does not tolerate the spot taint kubernetes.azure.com/scalesetpriority=spot:NoSchedule",
    ),
    (
        "prefers EKS's spot nodes",
        lambda o: _unprefer(o, "eks.amazonaws.com/capacityType"),
        "runner: no node affinity for spot nodes labelled eks.amazonaws.com/capacityType=SPOT",
    ),
    (
        "still on sandbox nodes",
        lambda o: pod(o, "runner").pop("nodeSelector"),
        "runner: not kept to sandbox nodes",
    ),
    (
        "a node's runners drain together",
        lambda o: find(o, "PodDisruptionBudget", "runner")["spec"].update(maxUnavailable=1),
        "runner: its PodDisruptionBudget lets 1 go at a time",
    ),
    (
        "a budget that protects",
        lambda o: find(o, "PodDisruptionBudget", "runner")["spec"].update(maxUnavailable="100%"),
        "runner: its PodDisruptionBudget allows 100% (protects nothing)",
    ),
    (
        "a budget that lets drains through",
        lambda o: find(o, "PodDisruptionBudget", "gateway")["spec"].update(maxUnavailable=0),
        "gateway: its PodDisruptionBudget allows no disruption",
    ),
    (
        "a floor by the clock",
        lambda o: find(o, "ScaledObject", "runner")["spec"]["triggers"].remove(schedule(o, "runner")),
        "runner: no cron trigger",
    ),
    (
        "the queue beside the clock",
        lambda o: find(o, "ScaledObject", "runner")["spec"]["triggers"].remove(trigger(o, "runner", "runner")),
        "runner: no queue trigger beside the schedule",
    ),
    (
        "school hours cover the peak",
        lambda o: schedule(o, "runner")["metadata"].update(desiredReplicas="2"),
        "runner: school hours hold 1.60 cores of runners, under the 2.4",
    ),
    (
        "a lower floor off-hours",
        lambda o: find(o, "ScaledObject", "runner")["spec"].update(minReplicaCount=3),
        "runner: cron trigger school-hours: holds 3, not above the floor of 3",
    ),
    (
        "never no runner",
        lambda o: find(o, "ScaledObject", "runner")["spec"].update(minReplicaCount=0),
        "runner: scales to 0 off-hours",
    ),
    (
        "a schedule KEDA parses",
        lambda o: schedule(o, "runner")["metadata"].update(start="0 7 * * 1-5 *"),
        "'0 7 * * 1-5 *' has 6 fields, not 5",
    ),
    (
        "hours that exist",
        lambda o: schedule(o, "runner")["metadata"].update(end="0 24 * * 1-5"),
        "hour '24' is not 0-23",
    ),
    (
        "a real time zone",
        lambda o: schedule(o, "runner")["metadata"].update(timezone="Europe/Londn"),
        "time zone 'Europe/Londn' is not an IANA name",
    ),
]


@pytest.mark.parametrize(
    ("removal", "expected"), [(r[1], r[2]) for r in SPOT_REMOVALS], ids=[r[0] for r in SPOT_REMOVALS]
)
def test_each_production_rule_fails_without_its_protection(
    removal: Callable[[list[Obj]], object], expected: str
) -> None:
    objects = rendered("production")
    assert not production_problems(objects)
    removal(objects)
    found = production_problems(objects)
    assert any(expected in p for p in found), "\n".join(found) or "no problem found"


def test_a_consumer_added_to_the_registry_without_manifests_fails() -> None:
    audit = streams.Durable("audit", streams.EXECUTIONS, ("x",), "coderunner consume audit", "new", process="audit")
    found = problems(rendered("production"), {**streams.CONSUMERS, "audit": (audit,)})
    assert found == ["no Deployment runs `coderunner consume audit`"]


def test_the_schema_checks_reject_unknown_and_mistyped_fields() -> None:
    objects = rendered("production")
    gateway = deployment(objects, "gateway")
    gateway["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    assert "'readinessprobe' was unexpected" in kubernetes_errors(gateway, "1.30")[0]
    runner = find(objects, "ScaledObject", "runner")
    runner["spec"]["minReplicas"] = 2
    runner["spec"]["maxReplicaCount"] = "20"
    trigger(objects, "runner", "runner")["metadata"]["lagThreshhold"] = "50"
    errors = "\n".join(crd_errors(runner))
    assert "'minReplicas' was unexpected" in errors
    assert "'20' is not of type 'integer'" in errors
    assert "'lagThreshhold'" in errors
    runner["spec"].update(minReplicaCount=5, maxReplicaCount=2)
    assert any("violates the CRD rule" in e for e in crd_errors(runner))
    hours = schedule(objects, "runner")["metadata"]
    hours["desiredReplica"] = hours.pop("desiredReplicas")
    assert any("the cron scaler takes" in e for e in crd_errors(runner))
    budget = find(objects, "PodDisruptionBudget", "runner")
    budget["spec"]["maxUnavaliable"] = budget["spec"].pop("maxUnavailable")
    assert "'maxUnavaliable' was unexpected" in kubernetes_errors(budget, "1.30")[0]


def test_the_image_check_fails_without_each_protection() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    packages = wheel_packages()
    assert "does not copy grading" in dockerfile_problems(text.replace("COPY grading grading\n", ""), packages)[0]
    assert "does not copy billing" in dockerfile_problems(text, [*packages, "billing"])[0]
    assert "does not run as 10001" in dockerfile_problems(text.replace("USER 10001:10001", "USER root"), packages)[0]
    shell = text.replace('ENTRYPOINT ["coderunner"]', "ENTRYPOINT coderunner")
    assert "shell form" in dockerfile_problems(shell, packages)[0]


def test_the_nats_checks_fail_without_each_protection() -> None:
    values = yaml.safe_load((K8S / "nats" / "values.yaml").read_text())
    defaults = yaml.safe_load((K8S / "nats" / f"chart-defaults-{NATS_CHART_VERSION}.yaml").read_text())
    broken = copy.deepcopy(values)
    broken["config"]["jetstrem"] = broken["config"].pop("jetstream")
    broken["config"]["cluster"]["enabled"] = "yes"
    assert nats_values_problems(broken, defaults) == [
        "config.cluster.enabled must be a bool, like the chart's default",
        f"config.jetstrem is not a key of the NATS chart {NATS_CHART_VERSION}",
    ]
    assert len(nats_cluster_problems(broken)) == 2
    single = copy.deepcopy(values)
    single["config"]["cluster"]["replicas"] = 1
    assert nats_cluster_problems(single) == ["NATS is not a cluster of 3 (streams at R3 need three servers)"]


def test_the_loader_refuses_what_it_does_not_render(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [a.yaml]\ncommonLabels: {team: x}\n")
    with pytest.raises(KustomizeError, match="commonLabels"):
        kustomize(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [a.yaml]\npatches:\n  - target: {kind: ConfigMap}\n    patch: 'data: {a: b}'\n"
    )
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    with pytest.raises(KustomizeError, match="strategic merge"):
        kustomize(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("secretGenerator:\n  - name: s\n    envs: [../outside.env]\n")
    with pytest.raises(KustomizeError, match="outside"):
        kustomize(tmp_path)
