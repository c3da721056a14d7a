"""deploy/: every YAML document validates against its resource's schema, the nightly's
requirements hold, the shell glue behaves, and deploy/Dockerfile agrees with constraints.txt.

Schemas (no cluster needed):
- Kubernetes built-in kinds (CronJob, ServiceAccount, Role, RoleBinding, ConfigMap) go through
  `kubernetes_validate.validate(..., strict=True)`: the upstream Kubernetes JSON schemas, every
  object closed (unknown fields are errors).
- RayJob and RayCronJob go through the KubeRay CRD openAPIV3Schema vendored in
  tests/schemas/kuberay/ (see the README there: where it comes from, what was trimmed); its
  pod templates and other core types are $refs into the same Kubernetes schemas.
Both are checked for every version in K8S_VERSIONS.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import importlib.resources
import importlib.util
import json
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
SCHEMAS = Path(__file__).resolve().parent / "schemas" / "kuberay"

# The oldest Kubernetes we claim to support and the newest kubernetes-validate bundles.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

K8S_DEFS = "https://kubernetes.io/api/_definitions.json"
CRD_BASE = "https://exportsweep.invalid/schemas/kuberay/"
CRD_FILES = {"RayJob": "ray.io_rayjobs.v1.schema.yaml",
             "RayCronJob": "ray.io_raycronjobs.v1.schema.yaml"}

OBJECT_STORE = ("s3://", "gs://")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
K8S_VAR_REF = re.compile(r"\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")   # what Kubernetes expands in args


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def _load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def deploy_documents() -> list[tuple[str, dict]]:
    """Every YAML document under deploy/, plus any manifest a ConfigMap carries as data."""
    found = []
    for path in sorted(DEPLOY.rglob("*.y*ml")):
        for i, doc in enumerate(_load_all(path)):
            where = f"{path.relative_to(REPO)}#{i}"
            found.append((where, doc))
            if doc.get("kind") == "ConfigMap":
                for key, text in (doc.get("data") or {}).items():
                    if key.endswith((".yaml", ".yml")):
                        for j, inner in enumerate(d for d in yaml.safe_load_all(text) if d):
                            found.append((f"{where}/data/{key}#{j}", inner))
    return found


DOCS = deploy_documents()


def doc_of(kind: str, path: str | None = None) -> dict:
    hits = [d for where, d in DOCS
            if d.get("kind") == kind and (path is None or where.startswith(path + "#"))]
    assert len(hits) == 1, f"expected one {kind} in {path or 'deploy/'}, found {len(hits)}"
    return hits[0]


def rayjob_file() -> dict:
    return doc_of("RayJob", "deploy/kuberay/rayjob.yaml")


def raycronjob_file() -> dict:
    return doc_of("RayCronJob", "deploy/kuberay/raycronjob.yaml")


def cronjob_docs() -> list[dict]:
    return _load_all(DEPLOY / "k8s" / "cronjob.yaml")


def embedded_rayjob() -> dict:
    cm = next(d for d in cronjob_docs() if d["kind"] == "ConfigMap")
    (text,) = cm["data"].values()
    return yaml.safe_load(text)


def rayjob_specs() -> list[tuple[str, dict]]:
    """Every RayJob spec deploy/ can start: the RayJob, the RayCronJob's template, the embedded one."""
    return [("rayjob.yaml", rayjob_file()["spec"]),
            ("raycronjob.yaml jobTemplate", raycronjob_file()["spec"]["jobTemplate"]),
            ("cronjob.yaml ConfigMap", embedded_rayjob()["spec"])]


def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if m:
            pins[_canon(m.group(1))] = m.group(2)
    return pins


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------------------------------------
# Schema validation
# ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _k8s_definitions(version: str) -> dict:
    path = (importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
            / f"v{version}-local-strict" / "_definitions.json")
    return json.loads(path.read_text())


def _tighten(node: Any) -> Any:
    """What the API server does that plain JSON Schema does not (see tests/schemas/kuberay/README.md):
    unknown fields are errors (kubectl's strict field validation; the server would prune them),
    and a required field with a default may be omitted (defaulting runs before validation)."""
    if isinstance(node, list):
        return [_tighten(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _tighten(v) for k, v in node.items()}
    props = node.get("properties")
    if isinstance(props, dict):
        if "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        if "required" in node:
            node["required"] = [r for r in node["required"]
                                if not (isinstance(props.get(r), dict) and "default" in props[r])]
    return node


def _crd_schema(kind: str) -> dict:
    schema = _tighten(yaml.safe_load((SCHEMAS / CRD_FILES[kind]).read_text()))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = CRD_BASE + CRD_FILES[kind]
    return schema


@functools.lru_cache(maxsize=None)
def crd_validator(kind: str, version: str) -> jsonschema.protocols.Validator:
    resources = [(K8S_DEFS, Resource.from_contents(_k8s_definitions(version)))]
    for name in CRD_FILES:
        resources.append((CRD_BASE + CRD_FILES[name],
                          Resource(contents=_crd_schema(name), specification=DRAFT202012)))
    registry = Registry().with_resources(resources)
    root = copy.deepcopy(_crd_schema(kind))
    root["properties"]["apiVersion"] = {"const": "ray.io/v1"}
    root["properties"]["kind"] = {"const": kind}
    root["properties"]["metadata"] = {
        "$ref": K8S_DEFS + "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    root["required"] = ["apiVersion", "kind", "metadata", "spec"]
    return jsonschema.Draft202012Validator(root, registry=registry)


def schema_errors(doc: dict, version: str) -> list[str]:
    """Schema problems of one document, '' for none; unknown kinds are problems too."""
    if str(doc.get("apiVersion")).startswith("ray.io/") and doc.get("kind") in CRD_FILES:
        validator = crd_validator(doc["kind"], version)
        return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                      for e in validator.iter_errors(doc))
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [e.message]
    return []


# ---------------------------------------------------------------------------------------------
# Names and containers (what the API server checks beyond the schema)
# ---------------------------------------------------------------------------------------------

def pod_specs(doc: dict) -> Iterator[tuple[str, dict]]:
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    if kind == "RayCronJob":
        kind, spec = "RayJob", spec.get("jobTemplate") or {}
    if kind == "RayJob":
        cluster = spec.get("rayClusterSpec") or {}
        yield "head", cluster["headGroupSpec"]["template"]["spec"]
        for group in cluster.get("workerGroupSpecs") or []:
            yield f"worker group {group.get('groupName')}", group["template"]["spec"]
        if "submitterPodTemplate" in spec:
            yield "submitter", spec["submitterPodTemplate"]["spec"]
    elif kind == "CronJob":
        yield "job", spec["jobTemplate"]["spec"]["template"]["spec"]


def containers(doc: dict) -> Iterator[tuple[str, dict]]:
    for where, pod in pod_specs(doc):
        for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
            yield f"{where}/{c.get('name')}", c


def name_problems(doc: dict) -> list[str]:
    problems = []
    meta = doc.get("metadata") or {}
    for field in ("name", "namespace"):
        value = meta.get(field)
        if not (isinstance(value, str) and len(value) <= 63 and DNS_LABEL.match(value)):
            problems.append(f"metadata.{field} {value!r} is not a DNS-1123 label")
    for key, value in (meta.get("labels") or {}).items():
        if not (isinstance(value, str) and len(value) <= 63 and LABEL_VALUE.match(value)):
            problems.append(f"label {key}={value!r} is not a valid label value")
    if doc.get("kind") in ("RayJob", "RayCronJob"):
        spec = doc["spec"] if doc["kind"] == "RayJob" else doc["spec"]["jobTemplate"]
        groups = [g.get("groupName") for g in spec["rayClusterSpec"].get("workerGroupSpecs", [])]
        if len(groups) != len(set(groups)):
            problems.append(f"worker groupName values repeat: {groups}")
        for g in groups:
            if not (isinstance(g, str) and DNS_LABEL.match(g)):
                problems.append(f"worker groupName {g!r} is not a DNS-1123 label")
    for where, pod in pod_specs(doc):
        names = [c.get("name") for c in pod.get("containers") or []]
        if len(names) != len(set(names)):
            problems.append(f"{where}: container names repeat: {names}")
        volumes = {v.get("name") for v in pod.get("volumes") or []}
        for v in volumes:
            if not (isinstance(v, str) and DNS_LABEL.match(v)):
                problems.append(f"{where}: volume name {v!r} is not a DNS-1123 label")
        for c in pod.get("containers") or []:
            if not (isinstance(c.get("name"), str) and DNS_LABEL.match(c["name"])):
                problems.append(f"{where}: container name {c.get('name')!r} is not a DNS-1123 label")
            if not c.get("image"):
                problems.append(f"{where}/{c.get('name')}: no image")
            for env in c.get("env") or []:
                if not ENV_NAME.match(str(env.get("name"))):
                    problems.append(f"{where}/{c.get('name')}: env name {env.get('name')!r}")
            for port in c.get("ports") or []:
                pname = port.get("name")
                if pname is not None and not (len(pname) <= 15 and PORT_NAME.match(pname)
                                              and re.search("[a-z]", pname)):
                    problems.append(f"{where}/{c.get('name')}: port name {pname!r}")
            for mount in c.get("volumeMounts") or []:
                if mount.get("name") not in volumes:
                    problems.append(f"{where}/{c.get('name')}: mounts undeclared volume {mount.get('name')!r}")
    return problems


def resource_problems(doc: dict) -> list[str]:
    """Every container states requests and limits for cpu and memory, and they are equal."""
    problems = []
    for where, c in containers(doc):
        res = c.get("resources") or {}
        requests, limits = res.get("requests") or {}, res.get("limits") or {}
        if not {"cpu", "memory"} <= set(limits):
            problems.append(f"{where}: limits lack cpu or memory: {limits}")
        if {str(k): str(v) for k, v in requests.items()} != {str(k): str(v) for k, v in limits.items()}:
            problems.append(f"{where}: requests {requests} != limits {limits}")
    return problems


def _gpus(container: dict) -> int:
    res = container.get("resources") or {}
    return max(int((res.get(part) or {}).get("nvidia.com/gpu", 0)) for part in ("requests", "limits"))


def rayjob_problems(spec: dict) -> list[str]:
    """The nightly RayJob's requirements (issue 5) on one RayJob spec."""
    problems = []
    if spec.get("shutdownAfterJobFinishes") is not True:
        problems.append("shutdownAfterJobFinishes must be true")
    ttl = spec.get("ttlSecondsAfterFinished")
    if not (isinstance(ttl, int) and not isinstance(ttl, bool) and ttl > 0):
        problems.append(f"ttlSecondsAfterFinished must be a positive integer, not {ttl!r}")
    if spec.get("backoffLimit") != 0:
        problems.append(f"backoffLimit must be 0, not {spec.get('backoffLimit')!r}")
    if spec.get("submissionMode", "K8sJobMode") not in ("K8sJobMode", "HTTPMode"):
        problems.append(f"submissionMode {spec.get('submissionMode')!r}: the entrypoint must be submitted")
    deadline = spec.get("activeDeadlineSeconds")
    if not (isinstance(deadline, int) and 0 < deadline < 24 * 3600):
        problems.append("activeDeadlineSeconds must bound a night (0 < s < 24 h)")
    cluster = spec.get("rayClusterSpec") or {}
    if cluster.get("rayVersion") != constraints()["ray"]:
        problems.append(f"rayVersion {cluster.get('rayVersion')!r} != ray in constraints.txt")
    head = cluster.get("headGroupSpec") or {}
    params = head.get("rayStartParams") or {}
    if params.get("num-cpus") != "0":
        problems.append(f"head rayStartParams num-cpus must be the string \"0\", not {params.get('num-cpus')!r}")
    if params.get("num-gpus", "0") != "0":
        problems.append("head rayStartParams num-gpus must be \"0\" when given")
    for c in head.get("template", {}).get("spec", {}).get("containers", []):
        if _gpus(c):
            problems.append(f"head container {c.get('name')} requests a GPU")
    groups = cluster.get("workerGroupSpecs") or []
    gpu_groups = [g for g in groups if any(_gpus(c) for c in g["template"]["spec"]["containers"])]
    cpu_groups = [g for g in groups if g not in gpu_groups]
    if not gpu_groups:
        problems.append("no worker group requests nvidia.com/gpu")
    if not cpu_groups:
        problems.append("no CPU-only worker group")
    for g in cpu_groups:
        if (g.get("rayStartParams") or {}).get("num-gpus") != "0":
            problems.append(f"CPU group {g.get('groupName')}: set num-gpus \"0\" (never pick up a node's GPU)")
    for g in gpu_groups:
        # Ray must see only the CPUs the GPU actors reserve, or the CPU pool (sized from the
        # cluster's CPUs) can land on the GPU node and crowd the GPU actor out.
        cpus = (g.get("rayStartParams") or {}).get("num-cpus", "")
        limit = g["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]
        if not (cpus.isdigit() and 1 <= int(cpus) <= float(limit)):
            problems.append(f"GPU group {g.get('groupName')}: num-cpus must be set (>= 1, <= its CPU limit)")
    for g in groups:
        if not (g.get("minReplicas", 0) <= g.get("replicas", 0) <= g.get("maxReplicas", 2**31 - 1)):
            problems.append(f"group {g.get('groupName')}: replicas outside [minReplicas, maxReplicas]")
    pods = [head.get("template", {}).get("spec", {})] + [g["template"]["spec"] for g in groups]
    for pod in pods:
        for c in pod.get("containers", []):
            env = {e["name"]: e for e in c.get("env") or []}
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                ref = (env.get(key) or {}).get("valueFrom", {}).get("secretKeyRef")
                if not ref or "value" in env.get(key, {}):
                    problems.append(f"{c.get('name')}: {key} must come from a Secret (secretKeyRef)")
            if (env.get("HF_HUB_OFFLINE") or {}).get("value") != "1":
                problems.append(f"{c.get('name')}: HF_HUB_OFFLINE=1 missing")
            for name, e in env.items():
                if "value" in e and re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY", name):
                    problems.append(f"{c.get('name')}: {name} is a literal value, use a Secret")
    problems += entrypoint_problems(spec.get("entrypoint", ""))
    return problems


def _segments(script: str) -> list[tuple[str, list[str]]]:
    """(separator before it, tokens) for each simple command of a one-line shell script."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    out, sep, current = [], "", []
    for token in lexer:
        if token in (";", "&&", "||"):
            out.append((sep, current))
            sep, current = token, []
        else:
            current.append(token)
    out.append((sep, current))
    return out


def _option(tokens: list[str], name: str) -> str | None:
    return tokens[tokens.index(name) + 1] if name in tokens[:-1] else None


def entrypoint_problems(entrypoint: str) -> list[str]:
    """The sweep, the diff gate against the previous night and the report, wired as issue 5 says."""
    if "\n" in entrypoint:
        return ["entrypoint spans lines: KubeRay pastes it into one shell command line"]
    if K8S_VAR_REF.search(entrypoint):
        return [f"entrypoint has a $(NAME) reference Kubernetes would expand: {K8S_VAR_REF.search(entrypoint)[0]}"]
    argv = shlex.split(entrypoint)
    if argv[:2] != ["bash", "-c"] or len(argv) != 3:
        return [f"entrypoint must be one single-quoted `bash -c '...'` argument, got {argv[:3]}"]
    segments = _segments(argv[2])
    index = {tuple(tok[:2]): i for i, (_, tok) in enumerate(segments) if tok[:1] == ["exportsweep"]}
    problems = []
    run_i, diff_i, report_i = (index.get(("exportsweep", c)) for c in ("run", "diff", "report"))
    if run_i is None or diff_i is None or report_i is None:
        return [f"entrypoint lacks one of exportsweep run/diff/report: {argv[2]}"]
    run, diff, report = (segments[i][1] for i in (run_i, diff_i, report_i))
    out = _option(run, "--out") or ""
    if run[2:3] != ["manifests/nightly.yaml"]:
        problems.append(f"run must sweep manifests/nightly.yaml, not {run[2:3]}")
    if _option(run, "--address") != "auto":
        problems.append("run must join the RayJob's cluster: --address auto")
    if not out.startswith(OBJECT_STORE):
        problems.append(f"results must go to object storage, --out {out!r}")
    if not (_option(run, "--run-id") or "").startswith("nightly-"):
        problems.append("run needs a --run-id nightly-<date>")
    if diff[2:5] != [out, "previous", "latest"]:
        problems.append(f"diff must compare `previous latest` in {out}: {diff[2:5]}")
    if set((_option(diff, "--fail-on") or "").split(",")) != {"regression", "missing"}:
        problems.append(f"diff gate must be --fail-on regression,missing: {_option(diff, '--fail-on')!r}")
    if not (diff_i == run_i + 1 and segments[diff_i][0] == "&&"):
        problems.append("diff must run right after, and only after, a successful run (&&)")
    if segments[diff_i + 1][1] != ["rc=$?"]:
        problems.append("the diff's status must be kept (rc=$?) right after it")
    if not (report[2:3] == [out] and (_option(report, "-o") or "").startswith(OBJECT_STORE)):
        problems.append(f"report must read {out} and write to object storage: {report}")
    if segments[report_i][0] != ";":
        problems.append("report must run whatever the gate said (';')")
    if segments[-1][1] != ["exit", "$rc"]:
        problems.append("the script must end with `exit $rc` (the gate's verdict)")
    return problems


# ---------------------------------------------------------------------------------------------
# Every document validates
# ---------------------------------------------------------------------------------------------

def test_deploy_has_the_documents_we_expect():
    kinds = sorted(d["kind"] for _, d in DOCS)
    assert kinds == sorted(["RayJob", "RayCronJob", "ServiceAccount", "Role", "RoleBinding",
                            "ConfigMap", "RayJob", "CronJob"]), kinds


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("where,doc", DOCS, ids=[w for w, _ in DOCS])
def test_document_validates_against_its_schema(where, doc, version):
    assert schema_errors(doc, version) == []


@pytest.mark.parametrize("where,doc", DOCS, ids=[w for w, _ in DOCS])
def test_document_names_and_references(where, doc):
    assert name_problems(doc) == []


def test_all_documents_share_one_namespace_and_one_image():
    assert {d["metadata"]["namespace"] for _, d in DOCS} == {"exportsweep"}
    images = {c["image"] for _, d in DOCS for _, c in containers(d)}
    assert len(images) == 1, images


@pytest.mark.parametrize("where,doc", DOCS, ids=[w for w, _ in DOCS])
def test_every_container_requests_equal_limits(where, doc):
    assert resource_problems(doc) == []


def test_every_container_is_checked():
    seen = [w for _, d in DOCS for w, _ in containers(d)]
    # 3 RayJob specs x (head, cpu worker, gpu worker, submitter) + the CronJob's launcher
    assert len(seen) == 13, seen


# ---------------------------------------------------------------------------------------------
# The nightly's requirements
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where,spec", rayjob_specs(), ids=[w for w, _ in rayjob_specs()])
def test_rayjob_spec_meets_the_nightly_requirements(where, spec):
    assert rayjob_problems(spec) == []


def test_the_three_rayjob_specs_are_one():
    (_, a), (_, b), (_, c) = rayjob_specs()
    assert a == b == c
    assert embedded_rayjob() == rayjob_file()


def test_raycronjob_schedule():
    spec = raycronjob_file()["spec"]
    assert re.fullmatch(r"(\S+\s+){4}\S+", spec["schedule"])
    assert spec["timeZone"] == "Etc/UTC"
    assert spec.get("suspend") is False


def test_cronjob_alternative_is_wired():
    docs = {d["kind"]: d for d in cronjob_docs()}
    cron = docs["CronJob"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    assert cron["startingDeadlineSeconds"] > 0
    assert cron["successfulJobsHistoryLimit"] > 0 and cron["failedJobsHistoryLimit"] > 0
    assert (cron["schedule"], cron["timeZone"]) == (raycronjob_file()["spec"]["schedule"],
                                                     raycronjob_file()["spec"]["timeZone"])
    job = cron["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    assert job["activeDeadlineSeconds"] > rayjob_file()["spec"]["activeDeadlineSeconds"]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    # the pod runs as the ServiceAccount the RoleBinding grants the Role to
    sa = docs["ServiceAccount"]["metadata"]["name"]
    assert pod["serviceAccountName"] == sa
    binding = docs["RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": docs["Role"]["metadata"]["name"]}
    assert {"kind": "ServiceAccount", "name": sa,
            "namespace": docs["ServiceAccount"]["metadata"]["namespace"]} in binding["subjects"]
    rules = [r for r in docs["Role"]["rules"] if "ray.io" in r["apiGroups"] and "rayjobs" in r["resources"]]
    assert rules and {"create", "get"} <= set(rules[0]["verbs"])
    verbs = {v for r in docs["Role"]["rules"] for v in r["verbs"]}
    assert not verbs & {"delete", "deletecollection", "update", "patch", "*"}, verbs
    # the RayJob it creates is mounted from the ConfigMap
    (volume,) = pod["volumes"]
    assert volume["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    (c,) = pod["containers"]
    env = {e["name"]: e["value"] for e in c["env"]}
    (mount,) = c["volumeMounts"]
    (key,) = docs["ConfigMap"]["data"]
    assert env["RAYJOB_MANIFEST"] == f"{mount['mountPath']}/{key}"
    assert c["command"] == ["/bin/bash", "-c"]
    # Kubernetes would expand $(NAME) in args before bash sees them
    assert not K8S_VAR_REF.search(c["args"][0])


# ---------------------------------------------------------------------------------------------
# The validators do catch broken documents
# ---------------------------------------------------------------------------------------------

def _broken_rayjob(mutate) -> dict:
    doc = copy.deepcopy(rayjob_file())
    mutate(doc)
    return doc


@pytest.mark.parametrize("mutate,expected", [
    (lambda d: d["spec"].__setitem__("shutdownAfterJobFinishes", "true"),
     "spec.shutdownAfterJobFinishes: 'true' is not of type 'boolean'"),
    (lambda d: d["spec"].__setitem__("backoffLimit", "0"),
     "spec.backoffLimit: '0' is not of type 'integer'"),
    (lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].pop("groupName"),
     "spec.rayClusterSpec.workerGroupSpecs.0: 'groupName' is a required property"),
    (lambda d: d["spec"]["rayClusterSpec"].pop("headGroupSpec"),
     "spec.rayClusterSpec: 'headGroupSpec' is a required property"),
    (lambda d: d["spec"].__setitem__("ttlSecondsAfterFinish", 300),
     "spec: Additional properties are not allowed ('ttlSecondsAfterFinish' was unexpected)"),
    (lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"].__setitem__("num-cpus", 0),
     "spec.rayClusterSpec.headGroupSpec.rayStartParams.num-cpus: 0 is not of type 'string'"),
    # inside a pod template: the $ref into the Kubernetes schema is followed
    (lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0].pop("name"),
     "spec.rayClusterSpec.headGroupSpec.template.spec.containers.0: 'name' is a required property"),
    (lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][1]["template"]["spec"]["containers"][0]
     .__setitem__("resources", {"limit": {"cpu": "8"}}),
     "Additional properties are not allowed ('limit' was unexpected)"),
    (lambda d: d.__setitem__("apiVersion", "ray.io/v1alpha1"),
     "apiVersion: 'ray.io/v1' was expected"),
])
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_schema_rejects_a_broken_rayjob(mutate, expected, version):
    errors = schema_errors(_broken_rayjob(mutate), version)
    assert any(expected in e for e in errors), errors


def test_schema_rejects_a_broken_raycronjob():
    doc = copy.deepcopy(raycronjob_file())
    del doc["spec"]["schedule"]
    doc["spec"]["jobTemplate"]["entrypoint"] = ["bash", "-c", "x"]
    errors = schema_errors(doc, K8S_VERSIONS[-1])
    assert "spec: 'schedule' is a required property" in errors
    assert any(e.startswith("spec.jobTemplate.entrypoint: ") and "not of type 'string'" in e
               for e in errors), errors


@pytest.mark.parametrize("mutate,expected", [
    (lambda s: s.__setitem__("concurrencyPolicy", 1), "concurrencyPolicy"),
    (lambda s: s.pop("jobTemplate"), "'jobTemplate' is a required property"),
    (lambda s: s["jobTemplate"]["spec"]["template"]["spec"].__setitem__("restartPolicyy", "Never"),
     "'restartPolicyy' was unexpected"),
])
def test_kubernetes_schema_rejects_a_broken_cronjob(mutate, expected):
    doc = copy.deepcopy(next(d for d in cronjob_docs() if d["kind"] == "CronJob"))
    mutate(doc["spec"])
    errors = schema_errors(doc, K8S_VERSIONS[-1])
    assert any(expected in e for e in errors), errors


def test_unknown_kind_is_an_error_not_a_pass():
    assert schema_errors({"apiVersion": "example.com/v1", "kind": "Nightly", "metadata": {"name": "x"}},
                         K8S_VERSIONS[-1])


def test_requirement_checks_catch_broken_specs():
    def broken(mutate) -> dict:
        spec = copy.deepcopy(rayjob_file()["spec"])
        mutate(spec)
        return spec

    cluster = lambda s: s["rayClusterSpec"]  # noqa: E731
    worker_c = lambda s, i: cluster(s)["workerGroupSpecs"][i]["template"]["spec"]["containers"][0]  # noqa: E731
    head_c = lambda s: cluster(s)["headGroupSpec"]["template"]["spec"]["containers"][0]  # noqa: E731
    cases = {
        "head num-cpus": lambda s: cluster(s)["headGroupSpec"]["rayStartParams"].pop("num-cpus"),
        "GPU on the head": lambda s: head_c(s)["resources"]["limits"].__setitem__("nvidia.com/gpu", "1"),
        "no GPU group": lambda s: [worker_c(s, 1)["resources"][p].pop("nvidia.com/gpu")
                                   for p in ("requests", "limits")],
        "GPU node's CPUs open to the CPU pool":
            lambda s: cluster(s)["workerGroupSpecs"][1]["rayStartParams"].pop("num-cpus"),
        "shutdown": lambda s: s.__setitem__("shutdownAfterJobFinishes", False),
        "ttl": lambda s: s.pop("ttlSecondsAfterFinished"),
        "backoff": lambda s: s.__setitem__("backoffLimit", 2),
        "literal secret": lambda s: head_c(s)["env"].append({"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}),
        "local results": lambda s: s.__setitem__("entrypoint", s["entrypoint"].replace(
            "--out s3://exportsweep-results/nightly", "--out /tmp/results")),
        "no gate": lambda s: s.__setitem__("entrypoint", s["entrypoint"].replace(
            " --fail-on regression,missing", "")),
        "weaker gate": lambda s: s.__setitem__("entrypoint", s["entrypoint"].replace(
            "regression,missing", "regression")),
        "no report": lambda s: s.__setitem__("entrypoint", re.sub(
            r"exportsweep report [^;]*;", "", s["entrypoint"])),
        "status lost": lambda s: s.__setitem__("entrypoint", s["entrypoint"].replace("exit $rc", "exit 0")),
        "bare &&": lambda s: s.__setitem__("entrypoint", shlex.split(s["entrypoint"])[2]),
        "multi-line": lambda s: s.__setitem__("entrypoint", s["entrypoint"].replace("; rc=", ";\nrc=")),
    }
    for what, mutate in cases.items():
        assert rayjob_problems(broken(mutate)), f"{what}: not caught"

    spec = broken(lambda s: worker_c(s, 0)["resources"]["requests"].__setitem__("memory", "16Gi"))
    assert resource_problems({"kind": "RayJob", "spec": spec}) == [
        "worker group cpu/ray-worker: requests {'cpu': '8', 'memory': '16Gi'} != "
        "limits {'cpu': '8', 'memory': '32Gi'}"]


# ---------------------------------------------------------------------------------------------
# The shell glue, run with stand-ins for ray, exportsweep and kubectl
# ---------------------------------------------------------------------------------------------

def _ray_source(relative: str) -> str:
    spec = importlib.util.find_spec("ray")   # locates the package without importing it
    assert spec and spec.submodule_search_locations
    return (Path(list(spec.submodule_search_locations)[0]) / relative).read_text()


def test_ray_cli_and_supervisor_behave_as_the_simulation_assumes():
    # `ray job submit -- ARGS...` re-quotes ARGS with shlex.join (on Linux) ...
    assert "shlex.join(entrypoint)" in _ray_source("dashboard/modules/job/cli.py")
    # ... and the job supervisor runs the entrypoint string through /bin/sh.
    assert "shell=True" in _ray_source("dashboard/modules/job/job_supervisor.py")


def _write_exe(path: Path, text: str) -> None:
    path.write_text(textwrap.dedent(text).lstrip())
    path.chmod(0o755)


@pytest.fixture
def stubs(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _write_exe(bin_dir / "exportsweep", """
        #!/bin/bash
        echo "$*" >> "$STUB_LOG"
        case "$1" in run) exit "${RUN_RC:-0}";; diff) exit "${DIFF_RC:-0}";; report) exit "${REPORT_RC:-0}";; esac
        exit 9
    """)
    # `ray`: what KubeRay's submitter calls. `job submit` does what Ray 2.58 does with the
    # words after `--` (shlex.join, then /bin/sh), synchronously; the driver's exit status is
    # what the Ray job reports.
    _write_exe(bin_dir / "ray", f"""
        #!{sys.executable}
        import os, shlex, subprocess, sys
        args = sys.argv[1:]
        if args[:2] == ["job", "status"]:
            sys.exit(1)
        if args[:2] == ["job", "submit"]:
            entrypoint = shlex.join(args[args.index("--") + 1:])
            rc = subprocess.run(entrypoint, shell=True).returncode
            open(os.environ["DRIVER_RC"], "w").write(str(rc))
            sys.exit(0)
        sys.exit(0)
    """)
    (bin_dir / "python").symlink_to(sys.executable)
    return bin_dir


def _env(bin_dir: Path, **extra: str) -> dict[str, str]:
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(bin_dir.parent), "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def _days() -> set[str]:
    now = dt.datetime.now(dt.timezone.utc)
    return {(now + dt.timedelta(seconds=s)).strftime("%Y%m%d") for s in (0, 60)}


@pytest.mark.parametrize("mode", ["K8sJobMode", "HTTPMode"])
@pytest.mark.parametrize("rcs,driver_rc,called", [
    ({}, 0, ["run", "diff", "report"]),                               # a clean night
    ({"DIFF_RC": "1"}, 1, ["run", "diff", "report"]),                 # the gate trips: still a report
    ({"RUN_RC": "3"}, 3, ["run", "report"]),                          # the sweep fails: no diff, a report
    ({"DIFF_RC": "1", "REPORT_RC": "5"}, 1, ["run", "diff", "report"]),  # a failed report never hides the gate
])
def test_entrypoint_through_kuberay_and_ray(stubs, tmp_path, mode, rcs, driver_rc, called):
    spec = rayjob_file()["spec"]
    app = tmp_path / "app"
    app.mkdir()
    entrypoint = spec["entrypoint"].replace("cd /app ", f"cd {app} ")
    log, rc_file = tmp_path / "calls.log", tmp_path / "driver.rc"
    env = _env(stubs, STUB_LOG=str(log), DRIVER_RC=str(rc_file), **rcs)
    if mode == "K8sJobMode":
        # The submitter's command as KubeRay builds it (common/job.go, BuildJobSubmitCommand;
        # rayjob_controller.go: ["/bin/bash", "-c", strings.Join(cmd, " ")]), without the
        # wait-for-dashboard loop in front.
        address, job_id = "http://exportsweep-nightly-head-svc:8265", "exportsweep-nightly-x7k2p"
        cmd = ["if", "!", "ray", "job", "status", "--address", address, job_id, ">/dev/null", "2>&1", ";",
               "then", "ray", "job", "submit", "--address", address, "--no-wait",
               "--submission-id", job_id, "--", spec["entrypoint"], ";", "fi", ";",
               "ray", "job", "logs", "--address", address, "--follow", job_id]
        cmd[cmd.index(spec["entrypoint"])] = entrypoint
        done = subprocess.run(["/bin/bash", "-c", " ".join(cmd)], env=env, timeout=60)
        assert done.returncode == 0     # the submitter succeeds; the job's status is the driver's
        assert int(rc_file.read_text()) == driver_rc
    else:
        # HTTPMode: the operator hands the string to Ray's job API, which runs it with /bin/sh.
        done = subprocess.run(entrypoint, shell=True, env=env, timeout=60)
        assert done.returncode == driver_rc
    calls = [line.split() for line in log.read_text().splitlines()]
    assert [c[0] for c in calls] == called
    run_id = calls[0][calls[0].index("--run-id") + 1]
    assert run_id in {f"nightly-{d}" for d in _days()}
    report_to = calls[-1][calls[-1].index("-o") + 1]
    assert report_to == f"s3://exportsweep-results/reports/{run_id}.html"   # same date as the run


@pytest.fixture
def launcher(tmp_path: Path, stubs: Path):
    cron = next(d for d in cronjob_docs() if d["kind"] == "CronJob")
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    script = container["args"][0]
    manifest = tmp_path / "rayjob.yaml"
    cm = next(d for d in cronjob_docs() if d["kind"] == "ConfigMap")
    manifest.write_text(cm["data"]["rayjob.yaml"])
    # `kubectl`: create / get / logs against a fake RayJob whose deployment status walks
    # through DEPLOY_SEQ (one value per poll).
    _write_exe(stubs / "kubectl", f"""
        #!{sys.executable}
        import json, os, shutil, sys
        args = sys.argv[1:]
        state_path = os.environ["KSTATE"]
        state = json.load(open(state_path)) if os.path.exists(state_path) else {{"polls": 0}}
        with open(os.environ["STUB_LOG"], "a") as log:
            log.write("kubectl " + " ".join(args) + "\\n")
        rc = 0
        if args[0] == "create":
            if os.environ.get("CREATE") == "exists":
                print("AlreadyExists", file=sys.stderr); state["exists"] = True; rc = 1
            elif os.environ.get("CREATE") == "fail":
                print("Forbidden", file=sys.stderr); rc = 1
            else:
                shutil.copy(args[args.index("-f") + 1], os.environ["CREATED"]); state["exists"] = True
        elif args[0] == "get":
            if not state.get("exists"):
                rc = 1
            elif "jsonpath={{.status.jobDeploymentStatus}}" in args:
                seq = os.environ["DEPLOY_SEQ"].split(",")
                print(seq[min(state["polls"], len(seq) - 1)], end=""); state["polls"] += 1
            elif "jsonpath={{.status.jobStatus}}" in args:
                print(os.environ.get("JOB_STATUS", ""), end="")
            elif "name" in args:
                print("rayjob.ray.io/" + args[2])
        elif args[0] == "logs":
            print("| entry | mode | change |")
        json.dump(state, open(state_path, "w"))
        sys.exit(rc)
    """)

    def run(**extra: str) -> tuple[int, list[str], Path]:
        log, created = tmp_path / "calls.log", tmp_path / "created.yaml"
        env = _env(stubs, STUB_LOG=str(log), KSTATE=str(tmp_path / "state.json"),
                   CREATED=str(created), RAYJOB_MANIFEST=str(manifest), POLL_SECONDS="0", **extra)
        done = subprocess.run(["/bin/bash", "-c", script], env=env, timeout=60,
                              capture_output=True, text=True)
        return done.returncode, log.read_text().splitlines(), created
    return run


def test_launcher_creates_tonights_rayjob_and_succeeds(launcher):
    rc, calls, created = launcher(DEPLOY_SEQ=",Running,Running,Complete", JOB_STATUS="SUCCEEDED")
    assert rc == 0
    job = yaml.safe_load(created.read_text())
    assert job["metadata"]["name"] in {f"exportsweep-nightly-{d}" for d in _days()}
    assert job["spec"] == rayjob_file()["spec"] and job["kind"] == "RayJob"
    assert sum("jobDeploymentStatus" in c for c in calls) == 4      # polled until Complete
    assert any(c.startswith(f"kubectl logs job/{job['metadata']['name']}") for c in calls)


@pytest.mark.parametrize("seq,status", [("Complete", "FAILED"),    # the diff gate (or the sweep) failed
                                        ("Failed", "FAILED"),
                                        ("Failed", "")])            # deadline, submission failure
def test_launcher_fails_when_the_night_fails(launcher, seq, status):
    rc, _, _ = launcher(DEPLOY_SEQ=seq, JOB_STATUS=status)
    assert rc == 1


def test_launcher_rerun_waits_for_the_existing_rayjob(launcher):
    rc, calls, created = launcher(CREATE="exists", DEPLOY_SEQ="Running,Complete", JOB_STATUS="SUCCEEDED")
    assert rc == 0 and not created.exists()
    assert sum(c.startswith("kubectl create") for c in calls) == 1


def test_launcher_exits_3_when_it_cannot_create(launcher):
    rc, calls, _ = launcher(CREATE="fail", DEPLOY_SEQ="Complete", JOB_STATUS="SUCCEEDED")
    assert rc == 3
    assert not any("jobDeploymentStatus" in c for c in calls)


# ---------------------------------------------------------------------------------------------
# deploy/Dockerfile and .dockerignore
# ---------------------------------------------------------------------------------------------

DOCKERFILE = (DEPLOY / "Dockerfile").read_text()
# ARG name -> the package it pins; ARGs that pin no Python package are listed as None.
VERSION_ARGS = {"RAY_VERSION": "ray", "TORCH_VERSION": "torch",
                "TORCHVISION_VERSION": "torchvision", "KUBECTL_VERSION": None}


def _args() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for name, value in re.findall(r"^ARG\s+([A-Z0-9_]+)=(\S+)", DOCKERFILE, re.M):
        found.setdefault(name, set()).add(value)
    return found


def test_dockerfile_pins_agree_with_constraints():
    pins, args = constraints(), _args()
    versions = {n: v for n, v in args.items() if n.endswith("_VERSION")}
    assert set(versions) == set(VERSION_ARGS), "a new *_VERSION ARG: say which package it pins"
    for name, values in versions.items():
        assert len(values) == 1, f"{name} is set to different values: {values}"
        if VERSION_ARGS[name]:
            assert values == {pins[VERSION_ARGS[name]]}, f"{name}={values} but constraints.txt has " \
                                                         f"{VERSION_ARGS[name]}=={pins[VERSION_ARGS[name]]}"
    # literal pins anywhere in the file (none expected today, but if one appears it must agree)
    for name, version in re.findall(r"[\"' ]([A-Za-z][A-Za-z0-9_.-]*)==([0-9][^\"'\s]*)", DOCKERFILE):
        assert pins.get(_canon(name)) == version, f"{name}=={version} disagrees with constraints.txt"
    # the base image: the official Ray image of the pinned Ray, for the Python constraints.txt was locked with
    (base,) = re.findall(r"^FROM\s+(\S+)", DOCKERFILE, re.M)
    assert base == "rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}"
    assert args["PYTHON_TAG"] == {f"py{sys.version_info.major}{sys.version_info.minor}"}
    # torch from the CUDA wheel index, and the project installed under constraints.txt
    (index,) = args["TORCH_INDEX_URL"]
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", index)
    assert '"torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"' in DOCKERFILE
    assert DOCKERFILE.count("-c /app/constraints.txt") == 2
    assert '"/app[zoo]"' in DOCKERFILE            # the nightly manifest expands the model-zoo families
    assert not re.search(r"^(ENTRYPOINT)\b", DOCKERFILE, re.M)   # KubeRay sets the command


def test_dockerfile_checks_installed_versions_against_constraints():
    # the build step that fails when pip resolved something other than the pins
    for name in ("torch", "torchvision", "ray", "pyarrow"):
        assert f"'{name}'" in DOCKERFILE
    assert "torch.version.cuda" in DOCKERFILE


def test_dockerignore_keeps_the_image_to_what_it_needs():
    import fnmatch
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]

    def ignored(name: str) -> bool:
        return any(fnmatch.fnmatch(name, p.removeprefix("**/")) for p in patterns)

    for name in (".git", ".venv", "results", ".pytest_cache", "exportsweep.egg-info", "__pycache__"):
        assert ignored(name), name
    for name in ("pyproject.toml", "README.md", "constraints.txt", "exporter", "orchestrator", "manifests"):
        assert not ignored(name), name
    # the Dockerfile reads these from the context
    for path in ("constraints.txt", "pyproject.toml", "README.md", "manifests/nightly.yaml"):
        assert (REPO / path).exists()


def test_dev_extra_declares_the_validation_packages():
    tomllib = pytest.importorskip("tomllib")
    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    names = {_canon(re.split(r"[<>=!~\[ ]", d)[0]) for d in dev}
    assert {"jsonschema", "kubernetes-validate"} <= names
    pins = constraints()
    assert {"jsonschema", "kubernetes-validate", "importlib-resources", "referencing"} <= set(pins)
    from importlib.metadata import version
    for name in ("jsonschema", "kubernetes-validate", "importlib-resources", "referencing"):
        assert version(name) == pins[name], f"{name}: installed {version(name)}, pinned {pins[name]}"


def test_every_exportsweep_command_in_the_entrypoints_parses_as_our_cli_would():
    # The stand-ins above accept anything; this holds the scripts to the real command line.
    from orchestrator.cli import build_parser
    parser = build_parser()
    for where, spec in rayjob_specs():
        script = shlex.split(spec["entrypoint"])[2]
        commands = [tok for _, tok in _segments(script) if tok[:1] == ["exportsweep"]]
        assert [c[1] for c in commands] == ["run", "diff", "report"], where
        for tokens in commands:
            argv = [t.replace("$day", "20261126") for t in tokens[1:]]
            args, extra = parser.parse_known_args(argv)
            assert extra == [], (where, argv)
        run = parser.parse_args([t.replace("$day", "20261126") for t in commands[0][1:]])
        assert run.compact and run.address == "auto"
