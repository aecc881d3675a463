"""Each instance's credentials: written private, found by URL, told to the server by path only."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509

from nimctl import contract
from nimctl.runtime import credentials
from nimctl.runtime.container import create_arguments, describe_container
from nimctl.runtime.credentials import Security
from nimctl.runtime.dry_run import docker_run_line, local_run_line
from nimctl.runtime.planning import plan_run


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NIMCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NIMCTL_ASSUME_GPUS", "none")
    return tmp_path / "state"


def test_the_key_is_private_and_found_by_the_instances_url() -> None:
    made = credentials.create("one", "http://127.0.0.1:8123", Security())
    assert stat.S_IMODE(made.folder.stat().st_mode) == 0o700
    for path in made.folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    key = made.api_key()
    assert key is not None and len(key) >= 40
    assert made.ssl_context() is None  # no TLS asked for
    for spelling in ("http://127.0.0.1:8123", "http://127.0.0.1:8123/", "http://127.0.0.1:8123/v1"):
        found = credentials.for_url(spelling)
        assert found is not None and found.api_key() == key
    assert credentials.for_url("http://127.0.0.1:8124") is None
    # A new instance of the name gets a new key.
    assert credentials.create("one", "http://127.0.0.1:8123", Security()).api_key() != key
    credentials.remove("one")
    assert credentials.load("one") is None and credentials.for_url("http://127.0.0.1:8123") is None


def test_tls_certificates_name_loopback_and_the_extra_hosts() -> None:
    made = credentials.create(
        "tls", "https://127.0.0.1:8443", Security(tls=True, mtls=True, tls_hosts=("nim.lan",))
    )
    cert = x509.load_pem_x509_certificate((made.folder / contract.SERVER_CERT_FILE_NAME).read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "nim.lan"}
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert made.client_cert.is_file() and made.ssl_context() is not None


def test_a_container_gets_the_folder_mounted_read_only_and_only_its_path() -> None:
    security = Security(tls=True)
    spec = plan_run(model="tiny-vlm", runtime="docker", name="guarded", security=security)
    assert spec.url.startswith("https://")
    assert (
        spec.env[contract.API_KEY_FILE] == f"{contract.CONTAINER_CREDENTIALS}/{contract.API_KEYS_FILE_NAME}"
    )
    assert spec.env[contract.SSL_MODE] == "TLS"
    mount = next(m for m in spec.mounts if m.target == contract.CONTAINER_CREDENTIALS)
    assert mount.read_only and mount.source == credentials.folder_for("guarded").resolve()
    key = credentials.create(spec.name, spec.url, security).api_key()
    assert key is not None
    arguments = create_arguments(describe_container(spec))
    assert key not in repr(arguments)
    assert contract.API_KEY not in arguments["environment"]
    assert key not in docker_run_line(spec, detach=True)


def test_a_host_process_is_told_the_host_paths() -> None:
    spec = plan_run(model="tiny-vlm", runtime="local", name="hosted", security=Security())
    assert spec.env[contract.API_KEY_FILE] == str(credentials.folder_for("hosted").resolve() / "api-keys")
    assert contract.SSL_MODE not in spec.env and spec.url.startswith("http://")
    assert "api-keys" in local_run_line(spec) or "***" in local_run_line(spec)


def test_no_auth_asks_for_nothing() -> None:
    spec = plan_run(model="tiny-vlm", runtime="docker", name="open", security=Security(api_key=False))
    assert spec.security is None
    assert contract.API_KEY_FILE not in spec.env
    assert all(m.target != contract.CONTAINER_CREDENTIALS for m in spec.mounts)


def test_a_host_process_does_not_inherit_the_callers_client_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from nimctl.runtime.local_runtime import process_environment

    monkeypatch.setenv(contract.API_KEY, "the-callers-key-for-another-server")
    spec = plan_run(model="tiny-vlm", runtime="local", name="hosted", security=Security())
    assert contract.API_KEY not in process_environment(spec)
    given = plan_run(model="tiny-vlm", runtime="local", name="hosted", env_pairs=[f"{contract.API_KEY}=mine"])
    assert process_environment(given)[contract.API_KEY] == "mine"


def test_no_key_on_an_exposed_address_is_asked_for_twice() -> None:
    from typer.testing import CliRunner

    from nimctl.cli.main import app

    def run(*flags: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["run", "--runtime", "docker", "--dry-run", *flags], env={"NO_COLOR": "1"})
        return result.exit_code, result.stderr

    code, stderr = run("--no-auth", "--host", "0.0.0.0")
    assert code == 2 and stderr.startswith("Error: --no-auth on 0.0.0.0:") and "--i-know" in stderr
    code, stderr = run("--no-auth", "--host", "0.0.0.0", "--i-know")
    assert code == 0 and "anyone who reaches this address" in stderr
    assert run("--host", "0.0.0.0")[0] == 0  # with its key: fine to expose
    assert run("--no-auth")[0] == 0  # loopback: only this machine
    assert run("--no-auth", "--host", "0.0.0.0", "-e", "NIMCTL_API_KEY=mine")[0] == 0
