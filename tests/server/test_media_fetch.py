"""The front's guarded media fetcher (nimctl.server.media_fetch): what it refuses, and what it fetches.

Most cases call the fetcher directly against this module's own loopback HTTP server, which
records every request: wherever a refusal is expected, it must have seen none. Loopback is
reachable only through the test-only escape ``NIMCTL_MEDIA_ALLOWED_NETWORKS=127.0.0.0/8``; names
resolve through ``NIMCTL_MEDIA_HOSTS_FILE``, never DNS. The last tests run the real engine.
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import ipaddress
import json
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from nimctl import contract
from nimctl.errors import ConfigError
from nimctl.server.config import ServerConfig
from nimctl.server.media_fetch import MediaPolicy, address_refusal, fetch_remote_media
from nimctl.server.plan import ENGINE_MEDIA_DOMAIN, build_plan, engine_environment
from nimctl.server.request_checks import BadRequestError
from tests.images import png_bytes
from tests.server_process import ServerProcess, free_port

ESCAPE = {contract.MEDIA_ALLOWED_NETWORKS: "127.0.0.0/8"}
HANG_LIMIT_S = 30  # how long /hang holds a request at most; the fetcher gives up long before
CAT = png_bytes()


def declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height``: enough for the pixel check, no pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


@dataclass
class MediaHost:
    """This module's loopback HTTP server: what it was asked for, and how much /flood sent."""

    port: int
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Host header)
    flood_sent: list[int] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}?case={uuid.uuid4().hex}"  # a fresh URL for each case

    def saw(self, url: str) -> bool:
        return any(url.endswith(path) for path, _ in self.requests)


@pytest.fixture(scope="module")
def media_host() -> Iterator[MediaHost]:
    release = threading.Event()
    host = MediaHost(port=0)
    bodies = {"/cat.png": CAT, "/huge.png": declaring(100_000, 100_000), "/clip.wav": b"RIFF0000WAVE"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            host.requests.append((self.path, self.headers.get("Host", "")))
            path = self.path.split("?")[0]
            if path == "/hang":
                release.wait(HANG_LIMIT_S)  # never answers while the test runs
            elif path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/cat.png")
                self.end_headers()
            elif path == "/flood":  # no Content-Length: only counting while reading can stop it
                self.send_response(200)
                self.end_headers()
                sent = 0
                try:
                    for _ in range(1024):  # 64 MiB at most
                        self.wfile.write(CAT[:16] + bytes(64 * 1024 - 16))
                        sent += 64 * 1024
                except OSError:
                    pass  # the fetcher hung up
                host.flood_sent.append(sent)
            elif path in bodies:
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav" if path.endswith(".wav") else "image/png")
                self.send_header("Content-Length", str(len(bodies[path])))
                self.end_headers()
                self.wfile.write(bodies[path])
            else:
                self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    host.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield host
    release.set()
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture(scope="module")
def hosts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hosts") / "hosts"
    path.write_text("127.0.0.1 evil.test media.test other.test  # all this module's server\n")
    return path


def config(tmp_path: Path, hosts_file: Path | None = None, **env: str) -> ServerConfig:
    if hosts_file is not None:
        env[contract.MEDIA_HOSTS_FILE] = str(hosts_file)
    return ServerConfig.from_env(env, model_path="builtin://tiny-vlm", cache_path=tmp_path)


def chat(*urls: str, part: str = "image_url") -> bytes:
    parts = [{"type": part, part: {"url": url}} for url in urls]
    return json.dumps({"model": "tiny-vlm", "messages": [{"role": "user", "content": parts}]}).encode()


def inlined(body: bytes, settings: ServerConfig) -> list[str]:
    """The URLs of the relayed body's media parts, after the fetcher."""
    relayed = json.loads(asyncio.run(fetch_remote_media(body, settings)))
    return [part[part["type"]]["url"] for part in relayed["messages"][0]["content"]]


def refusal(body: bytes, settings: ServerConfig) -> str:
    with pytest.raises(BadRequestError) as caught:
        asyncio.run(fetch_remote_media(body, settings))
    assert caught.value.param == "messages[0].content[0].image_url"
    return str(caught.value)


# --- What is fetched ---------------------------------------------------------------------------


def test_a_body_without_urls_is_relayed_as_it_came(tmp_path: Path) -> None:
    body = chat("data:image/png;base64," + base64.b64encode(CAT).decode())
    assert asyncio.run(fetch_remote_media(body, config(tmp_path))) is body  # not even parsed


def test_a_permitted_url_becomes_a_data_url_and_keeps_its_host_header(
    tmp_path: Path, media_host: MediaHost, hosts_file: Path
) -> None:
    url = media_host.url("/cat.png", host="media.test")
    settings = config(tmp_path, hosts_file, **ESCAPE)
    [data_url] = inlined(chat(url), settings)
    assert data_url == "data:image/png;base64," + base64.b64encode(CAT).decode()
    assert (url.split(str(media_host.port), 1)[1], f"media.test:{media_host.port}") in media_host.requests


def test_audio_keeps_the_type_its_server_declared(tmp_path: Path, media_host: MediaHost) -> None:
    [data_url] = inlined(chat(media_host.url("/clip.wav"), part="audio_url"), config(tmp_path, **ESCAPE))
    assert data_url.startswith("data:audio/wav;base64,")


def test_the_allowlist_lets_its_hosts_through(
    tmp_path: Path, media_host: MediaHost, hosts_file: Path
) -> None:
    settings = config(
        tmp_path, hosts_file, **ESCAPE, **{contract.ALLOWED_MEDIA_DOMAINS: "cdn.example, Media.Test."}
    )
    assert inlined(chat(media_host.url("/cat.png", host="media.test")), settings)[0].startswith(
        "data:image/png"
    )


def test_a_file_inside_the_local_folder_is_read_and_outside_refused(tmp_path: Path) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    (folder / "cat.png").write_bytes(CAT)
    (tmp_path / "secret.png").write_bytes(CAT)
    (folder / "link.png").symlink_to(tmp_path / "secret.png")
    settings = config(tmp_path, **{contract.MEDIA_LOCAL_DIR: str(folder)})
    assert inlined(chat((folder / "cat.png").as_uri()), settings)[0].startswith("data:image/png")
    for outside in (f"file://{folder}/../secret.png", (folder / "link.png").as_uri()):
        assert "outside NIMCTL_MEDIA_LOCAL_DIR" in refusal(chat(outside), settings)


# --- What is refused, with no request made -------------------------------------------------------


def test_file_urls_are_refused_without_a_local_folder(tmp_path: Path) -> None:
    assert "NIMCTL_MEDIA_LOCAL_DIR" in refusal(chat("file:///etc/passwd"), config(tmp_path))


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("2130706433", "loopback"),  # 127.0.0.1 spelt as one number
        ("[::1]", "loopback"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("[fd12::1]", "private"),
        ("169.254.169.254", "metadata"),
        ("[fd00:ec2::254]", "metadata"),
        ("169.254.1.1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("evil.test", "loopback"),  # a name that resolves to 127.0.0.1
    ],
)
def test_addresses_inside_the_network_are_refused(
    tmp_path: Path, media_host: MediaHost, hosts_file: Path, host: str, why: str
) -> None:
    url = media_host.url("/cat.png", host=host)
    message = refusal(chat(url), config(tmp_path, hosts_file))
    assert why in message and "refused" in message
    assert not media_host.saw(url)


@pytest.mark.parametrize(
    "spelling",
    [
        lambda url: url.replace("/", "\\/"),  # JSON's escaped slash
        lambda url: url.replace(":", "\\u003a", 1),  # the colon as a \\u escape
        lambda url: url.replace("http://", "HTTP:/"),  # one slash, upper case
    ],
)
def test_every_spelling_of_a_url_is_checked(tmp_path: Path, media_host: MediaHost, spelling: Any) -> None:
    url = media_host.url("/cat.png")
    body = b'{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"%s"}}]}]}'
    with pytest.raises(BadRequestError, match="refused"):
        asyncio.run(fetch_remote_media(body % spelling(url).encode(), config(tmp_path)))
    assert not media_host.saw(url)


def test_a_responses_style_input_image_is_checked(tmp_path: Path, media_host: MediaHost) -> None:
    url = media_host.url("/cat.png")
    body = json.dumps(
        {"messages": [{"role": "user", "content": [{"type": "input_image", "image_url": url}]}]}
    )
    with pytest.raises(BadRequestError, match="loopback"):
        asyncio.run(fetch_remote_media(body.encode(), config(tmp_path)))
    assert not media_host.saw(url)
    relayed = json.loads(asyncio.run(fetch_remote_media(body.encode(), config(tmp_path, **ESCAPE))))
    assert relayed["messages"][0]["content"][0]["image_url"].startswith("data:image/png;base64,")


def test_metadata_addresses_are_refused_even_inside_the_escape(tmp_path: Path) -> None:
    settings = config(tmp_path, **{contract.MEDIA_ALLOWED_NETWORKS: "169.254.0.0/16"})
    assert "metadata" in refusal(chat("http://169.254.169.254/latest/meta-data/"), settings)


def test_only_public_addresses_pass_the_address_check() -> None:
    policy = MediaPolicy()
    assert address_refusal(ipaddress.ip_address("93.184.215.14"), policy) is None
    assert address_refusal(ipaddress.ip_address("2606:4700::1111"), policy) is None
    assert address_refusal(ipaddress.ip_address("100.64.0.1"), policy)  # carrier-grade NAT
    assert (
        address_refusal(ipaddress.ip_address("64:ff9b::a00:1"), policy) == "a private address"
    )  # NAT64 of 10.0.0.1


def test_an_allowlist_miss_is_refused(tmp_path: Path, media_host: MediaHost, hosts_file: Path) -> None:
    url = media_host.url("/cat.png", host="other.test")
    settings = config(tmp_path, hosts_file, **ESCAPE, **{contract.ALLOWED_MEDIA_DOMAINS: "media.test"})
    assert "not in NIMCTL_ALLOWED_MEDIA_DOMAINS" in refusal(chat(url), settings)
    assert not media_host.saw(url)


def test_media_urls_none_refuses_every_remote_url(tmp_path: Path, media_host: MediaHost) -> None:
    url = media_host.url("/cat.png")
    assert "NIMCTL_MEDIA_URLS=none" in refusal(
        chat(url), config(tmp_path, **ESCAPE, **{contract.MEDIA_URLS: "none"})
    )
    assert not media_host.saw(url)


# --- What is refused once the server answers -----------------------------------------------------


def test_a_redirect_is_not_followed(tmp_path: Path, media_host: MediaHost) -> None:
    url = media_host.url("/redirect")
    assert "redirect" in refusal(chat(url), config(tmp_path, **ESCAPE))
    assert media_host.saw(url)
    assert "/cat.png" not in [
        path for path, _ in media_host.requests
    ]  # the redirect's target, never asked for


def test_a_server_that_never_answers_is_a_400_by_the_deadline(tmp_path: Path, media_host: MediaHost) -> None:
    started = time.monotonic()
    message = refusal(
        chat(media_host.url("/hang")), config(tmp_path, **ESCAPE, **{contract.MEDIA_FETCH_TIMEOUT: "1"})
    )
    assert "no answer within 1 s" in message
    assert time.monotonic() - started < 1 + 2  # the deadline and a margin


def test_a_download_over_the_byte_cap_is_cut_while_reading(tmp_path: Path, media_host: MediaHost) -> None:
    assert "more than 1048576 bytes" in refusal(
        chat(media_host.url("/flood")), config(tmp_path, **ESCAPE, **{contract.MEDIA_MAX_MB: "1"})
    )
    deadline = time.monotonic() + 10
    while not media_host.flood_sent and time.monotonic() < deadline:  # the handler notices the hang-up
        time.sleep(0.05)
    assert media_host.flood_sent and media_host.flood_sent[-1] < 32 * 1024 * 1024  # of 64 MiB


def test_an_image_over_the_pixel_cap_is_refused(tmp_path: Path, media_host: MediaHost) -> None:
    assert "100000x100000" in refusal(chat(media_host.url("/huge.png")), config(tmp_path, **ESCAPE))


def test_a_port_nobody_listens_on_is_a_400(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/cat.png"  # free a moment ago: nothing listens there
    assert "could not be fetched" in refusal(chat(url), config(tmp_path, **ESCAPE))


def test_an_answer_that_is_no_image_is_refused(tmp_path: Path, media_host: MediaHost) -> None:
    assert "HTTP 404" in refusal(chat(media_host.url("/missing.png")), config(tmp_path, **ESCAPE))


# --- Configuration and the engine's own lock ------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        (contract.MEDIA_ALLOWED_NETWORKS, "127.0.0.0/33"),
        (contract.MEDIA_URLS, "some"),
        (contract.MEDIA_LOCAL_DIR, "/no/such"),
    ],
)
def test_bad_media_settings_stop_the_server(tmp_path: Path, variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        config(tmp_path, **{variable: value})


def test_the_engine_fetches_nothing_remote_itself(tmp_path: Path) -> None:
    plan = build_plan(config(tmp_path, **{contract.MEDIA_MAX_MB: "2.5"}))
    args = plan.engine_args
    assert args[args.index("--allowed-media-domains") + 1] == ENGINE_MEDIA_DOMAIN
    assert engine_environment(plan)["VLLM_MAX_MEDIA_DOWNLOAD_SIZE_MB"] == "3"


# --- End to end, with the real engine --------------------------------------------------------------


@pytest.fixture(scope="module")
def escaped_server(tmp_path_factory: pytest.TempPathFactory, hosts_file: Path) -> Iterator[ServerProcess]:
    """A server with the test-only escape on, and the engine's port known to the test."""
    server = ServerProcess(
        "builtin://tiny-vlm",
        tmp_path_factory.mktemp("nim-cache"),
        tmp_path_factory.mktemp("logs") / "nim-serve.log",
        env={**ESCAPE, contract.MEDIA_HOSTS_FILE: str(hosts_file), contract.ENGINE_PORT: str(free_port())},
    )
    with server.running():
        yield server


def ask(server: ServerProcess, url: str) -> openai.types.chat.ChatCompletion:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    return client.chat.completions.create(
        model="tiny-vlm",
        max_tokens=3,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    )


@pytest.mark.engine
def test_a_chat_with_a_permitted_url_reaches_the_engine_inline(
    escaped_server: ServerProcess, media_host: MediaHost
) -> None:
    url = media_host.url("/cat.png")
    assert ask(escaped_server, url).choices[0].message is not None
    assert [path for path, _ in media_host.requests].count(url.split(str(media_host.port), 1)[1]) == 1


@pytest.mark.engine
@pytest.mark.parametrize(
    ("url", "why"), [("http://10.255.255.1/cat.png", "private"), ("http://169.254.169.254/", "metadata")]
)
def test_a_chat_with_a_refused_url_is_a_400(escaped_server: ServerProcess, url: str, why: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(escaped_server, url)
    assert caught.value.status_code == 400 and why in caught.value.message


@pytest.mark.engine
def test_the_engine_refuses_a_remote_url_that_bypassed_the_front(
    escaped_server: ServerProcess, media_host: MediaHost
) -> None:
    engine = f"http://127.0.0.1:{escaped_server.env[contract.ENGINE_PORT]}"
    url = media_host.url("/cat.png")
    body = json.loads(chat(url))
    response = httpx.post(engine + "/v1/chat/completions", json={**body, "max_tokens": 3}, timeout=60)
    assert 400 <= response.status_code < 500 and ENGINE_MEDIA_DOMAIN in response.text
    assert not media_host.saw(url)
