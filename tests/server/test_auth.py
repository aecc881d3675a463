"""API keys and TLS on the real front: the official openai client, with and without the key.

One real ``nim-serve`` (front + engine) guarded by a key file (a plain key and a hashed one) and
``NIMCTL_API_KEY``; the public-metrics switch and TLS need no engine, so they run nimctl's real
front in-process with its engine left loading.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest

from nimctl.runtime import certs
from tests.server_process import ServerProcess, free_port

PLAIN_KEY = "plain-key-0123456789"
HASHED_KEY = "hashed-key-abcdefghij"
VAR_KEY = "variable-key-zyxwvu"
GUARDED = ["/v1/models", "/v1/metadata", "/v1/manifest", "/v1/metrics", "/v1/license"]


@pytest.fixture(scope="module")
def guarded_server(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("keys")
    key_file = folder / "api-keys"
    digest = hashlib.sha256(HASHED_KEY.encode()).hexdigest()
    key_file.write_text(f"# comment\n{PLAIN_KEY}\n\nsha256:{digest}\n")
    server = ServerProcess(
        "builtin://tiny-vlm",
        model_cache,
        folder / "nim-serve.log",
        env={"NIMCTL_API_KEY_FILE": str(key_file), "NIMCTL_API_KEY": VAR_KEY},
    )
    with server.running():
        yield server


def _client(server: ServerProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=120)


@pytest.mark.engine
@pytest.mark.parametrize("key", [PLAIN_KEY, HASHED_KEY, VAR_KEY])
def test_each_configured_key_is_let_in(guarded_server: ServerProcess, key: str) -> None:
    client = _client(guarded_server, key)
    model = client.models.list().data[0].id
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=3, temperature=0
    )
    assert reply.choices[0].message.content is not None


@pytest.mark.engine
def test_a_wrong_key_is_401_in_openais_shape(guarded_server: ServerProcess) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        _client(guarded_server, "not-the-key").models.list()
    assert caught.value.status_code == 401
    body: Any = caught.value.body
    assert body["type"] == "AuthenticationError" and body["code"] == 401
    assert caught.value.response.headers["www-authenticate"].startswith("Bearer")
    # The hash of a configured key is not a key.
    digest = hashlib.sha256(HASHED_KEY.encode()).hexdigest()
    with pytest.raises(openai.AuthenticationError):
        _client(guarded_server, f"sha256:{digest}").models.list()


@pytest.mark.engine
def test_every_route_but_health_wants_the_key(guarded_server: ServerProcess) -> None:
    with httpx.Client(base_url=guarded_server.url, timeout=30) as http:
        for path in GUARDED:
            answer = http.get(path)
            assert answer.status_code == 401, path
            assert answer.headers["www-authenticate"].startswith("Bearer")
            assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
        assert http.post("/tokenize", json={"prompt": "hi"}).status_code == 401
        assert http.get("/v1/health/live").status_code == 200
        assert http.get("/v1/health/ready").status_code == 200
        authorized = {"Authorization": f"Bearer {PLAIN_KEY}"}
        assert http.get("/v1/metrics", headers=authorized).status_code == 200
        assert http.post("/tokenize", json={"prompt": "hi"}, headers=authorized).status_code == 200
    log = guarded_server.log_path.read_text(errors="replace")
    assert "refused GET" in log and "127.0.0.1" in log
    for key in (PLAIN_KEY, HASHED_KEY, VAR_KEY, "not-the-key"):
        assert key not in log


@pytest.mark.engine
def test_no_child_holds_the_fronts_listening_socket(guarded_server: ServerProcess) -> None:
    assert guarded_server.process is not None
    front = psutil.Process(guarded_server.process.pid)
    listening = [
        c
        for c in front.net_connections("tcp")
        if c.status == "LISTEN" and c.laddr.port == guarded_server.port
    ]
    assert listening, "the front does not listen"
    inode = os.stat(f"/proc/{front.pid}/fd/{listening[0].fd}").st_ino
    children = front.children(recursive=True)
    assert children, "the engine is not running"
    for child in children:
        for fd in os.listdir(f"/proc/{child.pid}/fd"):
            try:
                held = os.stat(f"/proc/{child.pid}/fd/{fd}").st_ino
            except OSError:  # closed meanwhile
                continue
            assert held != inode, f"{child.pid} ({child.name()}) holds the front's socket as fd {fd}"


# --- No engine: the front in-process, its engine loading ------------------------------------------
def _front(tmp: Path, **settings: Any) -> Iterator[str]:
    import uvicorn

    from nimctl.server.app import create_app
    from nimctl.server.config import ServerConfig
    from nimctl.server.plan import build_plan
    from nimctl.server.runner import tls_options
    from nimctl.server.state import Phase, ServerState

    config = ServerConfig.from_env(
        {}, model_path="builtin://tiny-vlm", cache_path=tmp / "cache", engine_port=free_port(), **settings
    )
    state = ServerState(build_plan(config, environ={}))
    state.set_phase(Phase.loading)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(state, supervise=False),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            **tls_options(config),
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # uvicorn's own flag: the socket is listening
        assert time.monotonic() < deadline and thread.is_alive(), "the front did not start"
        time.sleep(0.01)
    scheme = "https" if config.ssl_mode != "DISABLED" else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_public_metrics_opens_only_metrics(tmp_path: Path) -> None:
    for url in _front(tmp_path, api_key=VAR_KEY, public_metrics=True):
        assert httpx.get(url + "/v1/metrics").status_code == 200
        assert httpx.get(url + "/v1/models").status_code == 401


def test_no_key_configured_leaves_the_server_open(tmp_path: Path) -> None:
    for url in _front(tmp_path):
        assert httpx.get(url + "/v1/metrics").status_code == 200


def _tls_files(tmp: Path, *, client: bool = False) -> dict[str, Path]:
    ca, ca_key = certs.make_ca("test")
    server = certs.issue(ca.cert_pem, ca_key, "test")
    files = {"ca": tmp / "ca.crt", "crt": tmp / "server.crt", "key": tmp / "server.key"}
    files["ca"].write_bytes(ca.cert_pem)
    files["crt"].write_bytes(server.cert_pem)
    files["key"].write_bytes(server.key_pem)
    if client:
        issued = certs.issue(ca.cert_pem, ca_key, "client", client=True)
        files["client_crt"], files["client_key"] = tmp / "client.crt", tmp / "client.key"
        files["client_crt"].write_bytes(issued.cert_pem)
        files["client_key"].write_bytes(issued.key_pem)
    return files


def test_tls_handshake_needs_the_generated_ca(tmp_path: Path) -> None:
    from tests.cli.conftest import nimctl

    files = _tls_files(tmp_path)
    settings = {"ssl_mode": "TLS", "ssl_key_path": files["key"], "ssl_certs_path": files["crt"]}
    for url in _front(tmp_path, **settings):
        trusted = ssl.create_default_context(cafile=str(files["ca"]))
        assert httpx.get(url + "/v1/health/live", verify=trusted).status_code == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(url + "/v1/health/live")
        refused = nimctl("health", "--live", "--url", url)
        assert refused.exit_code not in (0, 1), refused.output
        assert "Error:" in refused.stderr
        assert nimctl("--cacert", str(files["ca"]), "health", "--live", "--url", url).exit_code == 0


def test_mtls_refuses_a_client_without_a_certificate(tmp_path: Path) -> None:
    files = _tls_files(tmp_path, client=True)
    settings = {
        "ssl_mode": "MTLS",
        "ssl_key_path": files["key"],
        "ssl_certs_path": files["crt"],
        "ssl_ca_certs_path": files["ca"],
    }
    for url in _front(tmp_path, **settings):
        bare = ssl.create_default_context(cafile=str(files["ca"]))
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/v1/health/live", verify=bare)
        shown = ssl.create_default_context(cafile=str(files["ca"]))
        shown.load_cert_chain(str(files["client_crt"]), str(files["client_key"]))
        assert httpx.get(url + "/v1/health/live", verify=shown).status_code == 200
