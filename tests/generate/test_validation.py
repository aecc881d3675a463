"""What ``nimctl generate`` writes is valid for the tools that will read it.

Each target is generated through the real CLI for the issue's cases (the tiny VLM on the CPU,
Qwen2.5-VL-7B on one H100, Qwen2.5-VL-72B on eight, and two-node profiles), then:

- built-in Kubernetes kinds: ``kubernetes-validate``, strict, for Kubernetes 1.30 and 1.37;
- custom resources (LeaderWorkerSet, NIMCache, NIMService): ``jsonschema`` against the published
  CRDs in ../shared/schemas, unknown fields rejected as the API server rejects them;
- every Kubernetes file: ``kubectl apply --dry-run=client -f`` (and the ``-o -`` stream through
  ``-f -``) with the real kubectl, against a stub API server (no cluster runs here: see
  tests/generate/validate.py for what that checks);
- Compose: ``docker-compose config --quiet`` (the file is run for real in
  tests/docker/test_compose_generated.py);
- Helm values: the nim-llm chart's values.schema.json, and the values the chart copies into its pod
  spec (env, resources, podSecurityContext...) against their Kubernetes types.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nimctl.cli.main import app
from tests.generate import validate

ENV = {"NO_COLOR": "1", "COLUMNS": "250", "NIMCTL_ASSUME_GPUS": "none", "HF_TOKEN": "", "NGC_API_KEY": ""}


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    nodes: int = 1


CASES = [
    Case("tiny-vlm-cpu", ("tiny-vlm", "--gpus", "none")),
    Case("qwen7b-h100x1", ("qwen2.5-vl-7b-instruct", "--gpus", "H100-80GB:1")),
    Case("qwen72b-h100x8", ("qwen2.5-vl-72b-instruct", "--gpus", "H100-80GB:8")),
    Case("qwen72b-l40sx8-2nodes", ("qwen2.5-vl-72b-instruct", "--gpus", "L40S:8", "--nodes", "2"), nodes=2),
    Case("tiny-vlm-cpu-2nodes", ("tiny-vlm", "--gpus", "none", "--nodes", "2"), nodes=2),
]
SINGLE = [case for case in CASES if case.nodes == 1]
MULTI = [case for case in CASES if case.nodes > 1]
# The cases each target expresses; it refuses the others (exit 2, tested below): compose, kube,
# nim-operator and helm-values describe one node, lws a multi-node group, and a NIMCache cannot
# pull a built-in model.
EXPRESSED = {
    "compose": SINGLE,
    "kube": SINGLE,
    "lws": MULTI,
    "nim-operator": [case for case in SINGLE if not case.argv[0].startswith("tiny-")],
    "helm-values": SINGLE,
}
# Kubernetes targets whose every document is validated and dry-run through kubectl.
KUBE_TARGETS = {target: EXPRESSED[target] for target in ("kube", "lws", "nim-operator")}


def generate(target: str, case: Case, out: Path | str, *extra: str) -> str:
    """``nimctl generate TARGET CASE -o OUT``; its stdout. Fails on a non-zero exit."""
    argv = ["generate", target, *case.argv, "-o", str(out), *extra]
    result = CliRunner().invoke(app, argv, env=ENV)
    assert result.exit_code == 0, f"nimctl {' '.join(argv)} exited {result.exit_code}:\n{result.stderr}"
    return result.stdout


def written(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml", ".json"))
    assert files, f"nothing written to {folder}"
    return files


@pytest.fixture(scope="module")
def api_server() -> Iterator[validate.StubApiServer]:
    with validate.stub_api_server() as server:
        yield server


def check_kubernetes_files(files: list[Path], api_server: validate.StubApiServer) -> list[dict]:
    docs_by_file = {path: validate.load_documents(path.read_text()) for path in files}
    docs = [doc for file_docs in docs_by_file.values() for doc in file_docs]
    builtin = [doc for doc in docs if not validate.is_custom(doc)]
    for version in validate.K8S_VERSIONS:
        validate.validate_builtin(builtin, version)
    for doc in docs:
        if validate.is_custom(doc):
            validate.validate_custom(doc)
    for path in files:
        validate.kubectl_dry_run(path, api_server)
    return docs


@pytest.mark.parametrize(
    ("target", "case"),
    [pytest.param(t, c, id=f"{t}-{c.id}") for t, cases in KUBE_TARGETS.items() for c in cases],
)
def test_kubernetes_targets_validate(
    target: str, case: Case, tmp_path: Path, api_server: validate.StubApiServer
) -> None:
    generate(target, case, tmp_path)
    docs = check_kubernetes_files(written(tmp_path), api_server)
    kinds = {doc["kind"] for doc in docs}
    if target == "lws":
        assert "LeaderWorkerSet" in kinds
        (group,) = [doc for doc in docs if doc["kind"] == "LeaderWorkerSet"]
        assert group["spec"]["leaderWorkerTemplate"]["size"] == case.nodes
    elif target == "nim-operator":
        assert {"NIMCache", "NIMService"} <= kinds
    else:
        assert kinds & {"Deployment", "StatefulSet"} and "Service" in kinds

    # -o -: one stream, as `kubectl apply -f -` reads it, with the same documents.
    stream = generate(target, case, "-")
    assert validate.load_documents(stream) == docs
    validate.kubectl_dry_run("-", api_server, stdin=stream, home=tmp_path)


def test_kube_statefulset_validates(tmp_path: Path, api_server: validate.StubApiServer) -> None:
    """--cache-per-replica: a StatefulSet with a claim template per pod."""
    generate("kube", SINGLE[1], tmp_path, "--cache-per-replica")
    docs = check_kubernetes_files(written(tmp_path), api_server)
    assert "StatefulSet" in {doc["kind"] for doc in docs}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in EXPRESSED["helm-values"]])
def test_helm_values_validate(case: Case, tmp_path: Path) -> None:
    generate("helm-values", case, tmp_path)
    (path,) = written(tmp_path)
    (values,) = validate.load_documents(path.read_text())
    for version in validate.K8S_VERSIONS:
        validate.validate_helm_values(values, version)


REFUSED = [
    pytest.param(target, case, id=f"{target}-{case.id}")
    for target, expressed in EXPRESSED.items()
    for case in CASES
    if case not in expressed
]


@pytest.mark.parametrize(("target", "case"), REFUSED)
def test_other_cases_are_refused(target: str, case: Case, tmp_path: Path) -> None:
    """Every target x case is either validated above or refused cleanly: nothing goes unchecked."""
    argv = ["generate", target, *case.argv, "-o", str(tmp_path / "out")]
    result = CliRunner().invoke(app, argv, env=ENV)
    assert result.exit_code == 2, f"nimctl {' '.join(argv)}: {result.exit_code}\n{result.output}"
    assert "Error:" in result.stderr and "Hint:" in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    hint = "scripts/ensure-docker.sh installs Debian's docker-compose"
    if os.environ.get("NIMCTL_SKIP_DOCKER") == "1":  # scripts/test.sh skipped the Docker set-up
        pytest.skip(f"no docker-compose and NIMCTL_SKIP_DOCKER=1 ({hint})")
    pytest.fail(f"no docker-compose ({hint})")


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in SINGLE])
def test_compose_config_validates(case: Case, tmp_path: Path) -> None:
    """docker-compose parses and checks the file against the Compose schema (no daemon needed)."""
    generate("compose", case, tmp_path, "--cache", str(tmp_path / "cache"))
    (path,) = written(tmp_path)
    proc = subprocess.run(
        [*compose_command(), "-f", str(path), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, f"docker-compose config rejected {path.name}:\n{proc.stderr}"


# The validators themselves: each rejects what its consumer rejects (so a pass above means something).

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: demo}
spec:
  selector: {matchLabels: {app: demo}}
  template:
    metadata: {labels: {app: demo}}
    spec:
      containers: [{name: nim, image: nimctl/nim-cpu:0.1.0}]
"""
NIMSERVICE = """
apiVersion: apps.nvidia.com/v1alpha1
kind: NIMService
metadata: {name: demo}
spec:
  image: {repository: nvcr.io/nim/demo, tag: "1"}
  authSecret: ngc-api
  storage: {nimCache: {name: demo}}
  expose: {service: {port: 8000}}
"""


def test_validators_accept_a_valid_sample(tmp_path: Path, api_server: validate.StubApiServer) -> None:
    path = tmp_path / "sample.yaml"
    path.write_text(DEPLOYMENT + "---" + NIMSERVICE)
    docs = check_kubernetes_files([path], api_server)
    assert [doc["kind"] for doc in docs] == ["Deployment", "NIMService"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].update(bogus=1), "'bogus' was unexpected"),
        (lambda d: d["spec"].update(replicas="one"), "'one' is not of type"),
        (lambda d: d["metadata"].update(name="Demo_1"), "not an RFC 1123 subdomain"),
        (lambda d: d["spec"]["template"]["metadata"]["labels"].update(app="x" * 64), "not a label value"),
    ],
    ids=["unknown-field", "wrong-type", "bad-name", "long-label"],
)
def test_builtin_validation_rejects(mutate, expected: str) -> None:
    (doc,) = validate.load_documents(DEPLOYMENT)
    mutate(doc)
    for version in validate.K8S_VERSIONS:
        with pytest.raises(validate.InvalidOutputError, match=expected):
            validate.validate_builtin([doc], version)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["spec"].update(bogus=1), "'bogus' was unexpected"),
        (lambda d: d["spec"].pop("image"), "'image' is a required property"),
        (lambda d: d["metadata"].update(labelz={}), "'labelz' was unexpected"),
        (lambda d: d.update(apiVersion="apps.nvidia.com/v9"), "not served by its CRD"),
    ],
    ids=["unknown-field", "missing-required", "unknown-metadata", "unserved-version"],
)
def test_custom_validation_rejects(mutate, expected: str) -> None:
    (doc,) = validate.load_documents(NIMSERVICE)
    mutate(doc)
    with pytest.raises(validate.InvalidOutputError, match=expected):
        validate.validate_custom(doc)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"model": {"numGpus": "one"}}, "'one' is not of type 'number'"),
        ({"env": [{"name": "A", "valu": "1"}]}, r"'valu' was unexpected\) \(io.k8s.api.core.v1.EnvVar\)"),
        ({"resources": {"limit": {"nvidia.com/gpu": 1}}}, "'limit' was unexpected"),
        ({"podSecurityContext": {"runAsUser": "root"}}, "'root' is not of type"),
    ],
    ids=["chart-schema", "env-item", "resources", "pod-security"],
)
def test_helm_values_validation_rejects(values: dict, expected: str) -> None:
    validate.validate_helm_values({"image": {"repository": "nvcr.io/nim/demo", "tag": "1"}})
    with pytest.raises(validate.InvalidOutputError, match=expected):
        validate.validate_helm_values(values)


def test_duplicate_keys_rejected() -> None:
    with pytest.raises(Exception, match="duplicate key 'name'"):
        validate.load_documents("metadata:\n  name: a\n  name: b\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (DEPLOYMENT.replace("kind: Deployment", "kind: Deploymnt"), "Deploymnt"),
        (DEPLOYMENT.replace("apps/v1", "apps/v1beta1"), "apps/v1beta1"),
        (DEPLOYMENT.replace("metadata: {name: demo}", "metadata: {}"), "name"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: a\n", "error converting YAML to JSON"),
    ],
    ids=["unknown-kind", "removed-version", "no-name", "broken-yaml"],
)
def test_kubectl_dry_run_rejects(text: str, expected: str, tmp_path: Path, api_server) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(Exception, match=expected):
        validate.kubectl_dry_run(path, api_server)


def test_missing_schemas_fail_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validate, "SCHEMAS", tmp_path / "nowhere")
    with pytest.raises(validate.InvalidOutputError, match="nowhere/nim-llm-values.schema.json is missing"):
        validate.validate_helm_values({})
