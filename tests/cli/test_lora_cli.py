"""``nimctl lora ls|add|rm|demo`` and ``run --lora-dir/--lora-refresh``.

Without an engine: the commands against the stand-in of tests/runtime/test_lora_ops.py (the
output, the exit codes, --format json), and run's plan (--dry-run). With one (``engine``): a real
``nimctl run tiny-llm --runtime local --lora-dir DIR --lora-refresh 1``, one per module, driven
through the CLI: ls, add, chat --model ADAPTER, rm, and the 404 after it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nimctl import contract
from nimctl.client.http import NimClient
from nimctl.errors import EXIT_OK, EXIT_REJECTED, EXIT_USAGE
from nimctl.lora.folder import ADDED_MARKER
from tests.cli.conftest import error_line, nimctl
from tests.runtime.test_lora_ops import BASE, LoraStandIn, serve, write_adapter
from tests.server_process import free_port


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No instance of this machine's state is looked at (add/rm look the URL up among them)."""
    monkeypatch.setenv("NIMCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NIMCTL_ASSUME_GPUS", "none")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    return tmp_path


@pytest.fixture
def stand_in(isolated: Path) -> Iterator[tuple[LoraStandIn, str]]:
    folder = isolated / "loras"
    write_adapter(folder / "static-r8")
    write_adapter(folder / "broken", weights=False)
    fake = LoraStandIn(folder)
    server, url = serve(fake)
    try:
        yield fake, url
    finally:
        server.shutdown()
        server.server_close()


def test_ls_lists_served_and_skipped_with_the_reason(stand_in: tuple[LoraStandIn, str]) -> None:
    _, url = stand_in
    table = nimctl("lora", "ls", "--url", url)
    assert table.exit_code == EXIT_OK, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "BASE", "RANK", "TARGETS", "STATE", "REASON/ORIGIN"]
    assert lines[1].split()[:5] == ["broken", "-", "-", "-", "skipped"] and "weights are missing" in lines[1]
    assert lines[2].split() == ["static-r8", BASE, "8", "q_proj,v_proj", "loaded", "folder"]
    assert "rescanned every 1 s; runtime updates off; largest rank 16" in table.stderr

    listed = json.loads(nimctl("lora", "ls", "--url", url, "--format", "json").stdout)
    assert (listed["lora"], listed["refresh_interval"], listed["runtime_updates"]) == (True, 1.0, False)
    assert [(a["name"], a["state"]) for a in listed["adapters"]] == [
        ("broken", "skipped"),
        ("static-r8", "loaded"),
    ]
    assert set(listed["adapters"][0]) == set(listed["adapters"][1]), "one set of keys for both states"

    one = json.loads(nimctl("lora", "ls", "--adapter", "static-r8", "--url", url, "-f", "json").stdout)
    assert [a["name"] for a in one["adapters"]] == ["static-r8"]
    missing = nimctl("lora", "ls", "-a", "nope", "--url", url)
    assert (
        missing.exit_code == EXIT_USAGE and error_line(missing) == f"Error: {url} has no adapter named nope"
    )


def test_ls_of_a_server_without_lora(stand_in: tuple[LoraStandIn, str], isolated: Path) -> None:
    fake, url = stand_in
    fake.source = None
    result = nimctl("lora", "ls", "--url", url)
    assert result.exit_code == EXIT_OK and result.stdout == ""
    assert "serves no LoRA adapters" in result.stderr
    assert json.loads(nimctl("lora", "ls", "--url", url, "-f", "json").stdout)["adapters"] == []
    added = nimctl("lora", "add", "x", str(write_adapter(isolated / "x")), "--url", url)
    assert added.exit_code == EXIT_USAGE and error_line(added) == f"Error: {url} serves no LoRA adapters"


def test_add_and_rm_in_dynamic_mode(stand_in: tuple[LoraStandIn, str], isolated: Path) -> None:
    fake, url = stand_in
    source = write_adapter(isolated / "mine", rank=16)
    added = nimctl("lora", "add", "mine", str(source), "--url", url)
    assert added.exit_code == EXIT_OK, added.stderr
    assert added.stdout.startswith(f"mine: added in the server's folder ({fake.source}/mine) after ")
    assert f"nimctl chat --url {url} --model mine" in added.stdout
    assert (fake.source / "mine" / ADDED_MARKER).is_file()  # type: ignore[operator]

    removed = nimctl("lora", "rm", "mine", "--url", url, "--format", "json")
    assert removed.exit_code == EXIT_OK, removed.stderr
    data = json.loads(removed.stdout)
    assert (data["action"], data["way"], data["path"]) == ("removed", "folder", str(fake.source / "mine"))  # type: ignore[operator]

    refused = nimctl("lora", "rm", "static-r8", "--url", url)
    assert refused.exit_code == EXIT_USAGE and "was not put there by nimctl lora add" in refused.stderr
    broken = nimctl("lora", "add", "again", str(fake.source / "broken"), "--url", url)  # type: ignore[operator]
    assert broken.exit_code == EXIT_USAGE and "the adapter's weights are missing" in error_line(broken)


def test_runtime_mode_and_neither(stand_in: tuple[LoraStandIn, str], isolated: Path) -> None:
    fake, url = stand_in
    fake.refresh = None
    source = write_adapter(isolated / "rt")
    neither = nimctl("lora", "add", "rt", str(source), "--url", url)
    assert neither.exit_code == EXIT_USAGE
    assert "does not load adapters at run time" in error_line(neither)
    assert "--lora-refresh" in neither.stderr and contract.ALLOW_LORA_UPDATES in neither.stderr

    fake.runtime_updates = True
    added = nimctl("lora", "add", "rt", str(source), "--url", url, "-f", "json")
    assert added.exit_code == EXIT_OK, added.stderr
    assert json.loads(added.stdout)["adapter"]["origin"] == "runtime"
    again = nimctl("lora", "add", "rt", str(source), "--url", url)
    assert again.exit_code == EXIT_USAGE and "has an adapter named rt already (served)" in error_line(again)
    assert nimctl("lora", "rm", "rt", "--url", url).exit_code == EXIT_OK
    gone = nimctl("lora", "rm", "rt", "--url", url)
    assert gone.exit_code == EXIT_USAGE and error_line(gone) == f"Error: {url} has no adapter named rt"


def test_instance_and_url_are_one_target(isolated: Path) -> None:
    both = nimctl("lora", "ls", "--instance", "x", "--url", "http://127.0.0.1:1")
    assert both.exit_code == EXIT_USAGE and "give one of them" in error_line(both)
    unknown = nimctl("lora", "rm", "a", "--instance", "nimctl-nothing")
    assert (
        unknown.exit_code == EXIT_USAGE
        and "no " in error_line(unknown)
        and "nimctl-nothing" in error_line(unknown)
    )


def test_run_labels_the_folder_and_the_interval(isolated: Path) -> None:
    folder = isolated / "adapters"
    folder.mkdir()
    docker = nimctl("run", "tiny-llm", "--runtime", "docker", "--lora-dir", str(folder), "--lora-refresh", "2.5",
                    "--dry-run")  # fmt: skip
    assert docker.exit_code == EXIT_OK, docker.stderr
    assert f"-v {folder}:{contract.CONTAINER_LORA}:ro" in docker.stdout
    assert f"-e {contract.PEFT_SOURCE}={contract.CONTAINER_LORA}" in docker.stdout
    assert f"-e {contract.PEFT_REFRESH_INTERVAL}=2.5" in docker.stdout
    assert f"--label {contract.LORA_DIR_LABEL}={folder}" in docker.stdout
    assert f"--label {contract.LORA_REFRESH_LABEL}=2.5" in docker.stdout
    assert "-cpu-lora" in docker.stderr, "a LoRA profile is chosen"

    # --lora, the option's first name, still works; a relative folder is labelled absolute.
    local = nimctl("run", "tiny-llm", "--runtime", "local", "--lora", str(folder), "--dry-run")
    assert local.exit_code == EXIT_OK and f"{contract.PEFT_SOURCE}={folder}" in local.stdout
    assert contract.PEFT_REFRESH_INTERVAL not in local.stdout

    for argv, message in [
        (["--lora-refresh", "1"], "--lora-refresh needs --lora-dir"),
        (["--lora-dir", str(folder), "--lora-refresh", "0"], "bad --lora-refresh 0"),
        (["--lora-dir", str(isolated / "nope")], "not a folder"),
        (["--lora-dir", str(folder), "--lora", str(folder)], "--lora is --lora-dir's old name"),
    ]:
        refused = nimctl("run", "tiny-llm", "--runtime", "local", *argv, "--dry-run")
        assert refused.exit_code == EXIT_USAGE and message in error_line(refused), refused.stderr


def test_the_spec_labels_and_the_instance_reads_them(isolated: Path) -> None:
    from nimctl.runtime.local_runtime import find
    from nimctl.runtime.planning import plan_run
    from nimctl.runtime.spec import RunSpec

    folder = isolated / "adapters"
    folder.mkdir()
    spec = plan_run(model="tiny-llm", runtime="local", lora_dir=folder, lora_refresh=1, cache_dir=isolated)
    assert isinstance(spec, RunSpec) and (spec.lora_dir, spec.lora_refresh) == (folder, 1)
    assert (
        spec.labels[contract.LORA_DIR_LABEL] == str(folder)
        and spec.labels[contract.LORA_REFRESH_LABEL] == "1"
    )
    plain = plan_run(model="tiny-llm", runtime="local", cache_dir=isolated)
    assert contract.LORA_DIR_LABEL not in plain.labels and contract.LORA_REFRESH_LABEL not in plain.labels
    # A local instance's record carries what a container's labels say.
    record = isolated / "state" / "instances" / "x"
    record.mkdir(parents=True)
    (record / "instance.json").write_text(json.dumps(
        {"name": "x", "url": "http://127.0.0.1:1", "pid": 0, "lora_dir": str(folder), "lora_refresh": 1.0}
    ))  # fmt: skip
    handle = find("x")
    assert handle is not None
    found = handle.to_instance()
    assert (found.lora_dir, found.lora_refresh) == (str(folder), 1.0)


def test_default_model_leaves_the_adapters_out() -> None:
    cards = [
        {"id": "tiny-llm", "object": "model", "parent": None},
        {"id": "tiny-llm-lora-r8", "object": "model", "parent": "tiny-llm"},
    ]
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, json={"object": "list", "data": cards})
    )
    with NimClient("http://127.0.0.1:1", transport=transport) as client:
        assert client.default_model() == "tiny-llm"


def test_demo_prints_the_folder_it_made(isolated: Path) -> None:
    from nimctl.lora.folder import read_adapter
    from nimctl.store.layout import demo_loras_dir

    cache = isolated / "cache"
    result = nimctl("lora", "demo", "--model", "builtin://tiny-llm", "--cache", str(cache))
    assert result.exit_code == EXIT_OK, result.stderr
    folder = Path(result.stdout.strip())
    assert folder == demo_loras_dir(cache) / "tiny-llm-loras"  # beside the built-in models, not among them
    assert read_adapter(folder / "tiny-llm-lora-r8").rank == 8
    again = nimctl("lora", "demo", "--cache", str(cache))  # made once: the second run only finds it
    assert again.exit_code == EXIT_OK and again.stdout == result.stdout
    unknown = nimctl("lora", "demo", "--model", "tiny-vlm-nope", "--cache", str(cache))
    assert unknown.exit_code == EXIT_USAGE and "no demo LoRA adapters" in error_line(unknown)


# -- with a real engine ---------------------------------------------------------------------------
ENGINE_NAME = "nimctl-lora-cli-test"


class Engine:
    """One `nimctl run --lora-dir --lora-refresh 1` instance; ``cli`` runs nimctl with its state."""

    def __init__(self, env: dict[str, str], url: str, lora_dir: Path, demo: Path) -> None:
        self.env, self.url, self.lora_dir, self.demo = env, url, lora_dir, demo

    def cli(self, *argv: str):  # type: ignore[no-untyped-def]
        return nimctl(*argv, env=self.env)


def start_engine(root: Path, model_cache: Path, lora_dir: Path, *extra: str) -> tuple[dict[str, str], str]:
    """`nimctl run tiny-llm --runtime local -d --lora-dir DIR EXTRA`: the CLI's env, and the URL."""
    env = {"NIMCTL_STATE_DIR": str(root / "state"), "NIMCTL_ASSUME_GPUS": "none", "NIMCTL_URL": ""}
    port = free_port()
    started = nimctl(
        "run", "tiny-llm", "--runtime", "local", "-d", "--name", ENGINE_NAME, "--port", str(port),
        "--cache", str(model_cache), "--lora-dir", str(lora_dir), "-e", f"{contract.MAX_LORA_RANK}=16",
        "-e", "VLLM_CPU_KVCACHE_SPACE=1", "--timeout", "900", *extra, env=env,
    )  # fmt: skip
    if started.exit_code != EXIT_OK:
        nimctl("stop", ENGINE_NAME, env=env)
        pytest.fail(f"nimctl run failed ({started.exit_code}): {started.stderr}{started.stdout}")
    return env, f"http://127.0.0.1:{port}"


def demo_adapters(model_cache: Path) -> Path:
    from nimctl.lora.demo import ensure_demo_adapters
    from nimctl.store.layout import demo_loras_dir

    return ensure_demo_adapters("tiny-llm", demo_loras_dir(model_cache))


@pytest.mark.engine
def test_engine_runtime_updates_add_and_rm_without_a_rescan(tmp_path: Path, model_cache: Path) -> None:
    """A folder read only at start, runtime updates on: add loads the adapter where it is (a host
    process reads the host's path), rm unloads it. Before the module's engine starts: one at a time."""
    demo = demo_adapters(model_cache)
    lora_dir = tmp_path / "loras"
    shutil.copytree(demo / "tiny-llm-lora-r8", lora_dir / "tiny-llm-lora-r8")
    env, url = start_engine(tmp_path, model_cache, lora_dir, "-e", f"{contract.ALLOW_LORA_UPDATES}=true")
    try:
        name = "tiny-llm-lora-r16"
        added = nimctl("lora", "add", name, str(demo / name), "-f", "json", env=env)
        assert added.exit_code == EXIT_OK, added.stderr
        data = json.loads(added.stdout)
        assert (data["way"], data["path"], data["adapter"]["origin"]) == (
            "runtime",
            str(demo / name),
            "runtime",
        )
        assert sorted(p.name for p in lora_dir.iterdir()) == ["tiny-llm-lora-r8"], "nothing copied"
        reply = nimctl(
            "chat", "--url", url, "--model", name, "--max-tokens", "4", "--no-stream", "Hi", env=env
        )
        assert reply.exit_code == EXIT_OK, reply.stderr

        # The folder's own adapter keeps its name.
        taken = nimctl("lora", "add", "tiny-llm-lora-r8", str(demo / name), env=env)
        assert taken.exit_code == EXIT_USAGE and "already (served)" in error_line(taken)

        removed = nimctl("lora", "rm", name, "-f", "json", env=env)
        assert removed.exit_code == EXIT_OK, removed.stderr
        assert json.loads(removed.stdout)["way"] == "runtime"
        gone = nimctl(
            "chat", "--url", url, "--model", name, "--max-tokens", "4", "--no-stream", "Hi", env=env
        )
        assert gone.exit_code == EXIT_REJECTED and f"The model `{name}` does not exist" in gone.stderr
    finally:
        nimctl("stop", ENGINE_NAME, env=env)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Engine]:
    root = tmp_path_factory.mktemp("lora-cli")
    demo = demo_adapters(model_cache)
    lora_dir = root / "loras"
    lora_dir.mkdir()
    for name in ("tiny-llm-lora-r8", "tiny-llm-lora-broken"):  # r16 comes later, with lora add
        shutil.copytree(demo / name, lora_dir / name)
    env, url = start_engine(root, model_cache, lora_dir, "--lora-refresh", "1")
    try:
        yield Engine(env, url, lora_dir, demo)
    finally:
        nimctl("stop", ENGINE_NAME, env=env)


@pytest.mark.engine
def test_engine_ls_shows_the_folder_as_the_server_serves_it(engine: Engine) -> None:
    listed = engine.cli("lora", "ls", ENGINE_NAME, "--format", "json")
    assert listed.exit_code == EXIT_OK, listed.stderr
    data = json.loads(listed.stdout)
    assert data["refresh_interval"] == 1.0 and data["max_lora_rank"] == 16
    states = {a["name"]: a for a in data["adapters"]}
    assert states["tiny-llm-lora-r8"]["state"] == "loaded" and states["tiny-llm-lora-r8"]["rank"] == 8
    assert states["tiny-llm-lora-broken"]["state"] == "skipped"
    assert "adapter_model.safetensors" in states["tiny-llm-lora-broken"]["reason"]
    # The one running instance is the default target; the table has the columns.
    table = engine.cli("lora", "ls")
    assert table.exit_code == EXIT_OK and "REASON/ORIGIN" in table.stdout
    meta = engine.cli("metadata")
    assert meta.exit_code == EXIT_OK and "tiny-llm-lora-r8 (1 skipped;" in meta.stdout


@pytest.mark.engine
def test_engine_chat_with_an_adapter_and_the_base_is_still_the_default(engine: Engine) -> None:
    reply = engine.cli("chat", "--model", "tiny-llm-lora-r8", "--max-tokens", "4", "--seed", "1", "--no-stream",
                       "-f", "json", "Hello")  # fmt: skip
    assert reply.exit_code == EXIT_OK, reply.stderr
    assert json.loads(reply.stdout)["model"] == "tiny-llm-lora-r8"
    base = engine.cli("chat", "--max-tokens", "4", "--no-stream", "-f", "json", "Hello")
    assert base.exit_code == EXIT_OK, base.stderr  # adapters are models too, and not the default
    assert json.loads(base.stdout)["model"] == "tiny-llm"


@pytest.mark.engine
def test_engine_add_chat_rm_then_404(engine: Engine) -> None:
    name = "tiny-llm-lora-r16"
    added = engine.cli("lora", "add", name, str(engine.demo / name), "--instance", ENGINE_NAME, "-f", "json")
    assert added.exit_code == EXIT_OK, added.stderr
    data = json.loads(added.stdout)
    assert (data["way"], data["adapter"]["rank"]) == ("folder", 16)
    assert data["seconds"] < 2 * 1 + 30
    assert (engine.lora_dir / name / ADDED_MARKER).is_file()

    reply = engine.cli("chat", "--model", name, "--max-tokens", "4", "--no-stream", "Hello")
    assert reply.exit_code == EXIT_OK, reply.stderr

    removed = engine.cli("lora", "rm", name)  # the one running instance, found by its URL
    assert removed.exit_code == EXIT_OK, removed.stderr
    assert not (engine.lora_dir / name).exists()
    listed = json.loads(engine.cli("lora", "ls", "-f", "json").stdout)
    assert name not in [a["name"] for a in listed["adapters"]]
    gone = engine.cli("chat", "--model", name, "--max-tokens", "4", "--no-stream", "Hello")
    assert gone.exit_code == EXIT_REJECTED and f"The model `{name}` does not exist" in gone.stderr


@pytest.mark.engine
def test_engine_rm_leaves_the_users_own_folder(engine: Engine) -> None:
    refused = engine.cli("lora", "rm", "tiny-llm-lora-r8", "--instance", ENGINE_NAME)
    assert refused.exit_code == EXIT_USAGE and "was not put there by nimctl lora add" in refused.stderr
    assert (engine.lora_dir / "tiny-llm-lora-r8" / "adapter_model.safetensors").is_file()
