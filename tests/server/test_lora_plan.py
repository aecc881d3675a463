"""LoRA at launch: the folder checked, the engine's LoRA arguments sized, the routes gated.

Unit tests of the plan and the front without an engine; tests/lora/test_serving.py proves the whole
path on the real one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nimctl.engine_flags import flag_value
from nimctl.errors import ConfigError, NimctlError
from nimctl.server.app import create_app
from nimctl.server.config import ServerConfig
from nimctl.server.plan import LaunchPlan, build_plan
from nimctl.server.state import Phase, ServerState
from tests.lora.test_folder import make_adapter

LORA_PROFILE = "vllm-fp32-tp1-pp1-cpu-lora"


@pytest.fixture
def adapters(tmp_path: Path) -> Path:
    folder = tmp_path / "loras"
    make_adapter(folder / "r8", rank=8)
    make_adapter(folder / "r16", rank=16)
    make_adapter(folder / "broken", weights=False)
    return folder


def plan(tmp_path: Path, peft: Path | str, **env: str) -> LaunchPlan:
    environ = {"NIM_MODEL_PATH": "builtin://tiny-llm", "NIM_PEFT_SOURCE": str(peft), **env}
    return build_plan(ServerConfig.from_env(environ, cache_path=tmp_path), environ={})


def sizes(launch: LaunchPlan) -> tuple[str | None, ...]:
    args = launch.engine_args
    return tuple(flag_value(args, f) for f in ("--max-lora-rank", "--max-loras", "--max-cpu-loras"))


def test_static_mode_fits_the_adapters_found(tmp_path: Path, adapters: Path) -> None:
    launch = plan(tmp_path, adapters)
    assert launch.profile_name == LORA_PROFILE
    assert "--enable-lora" in launch.engine_args and "--lora-modules" not in launch.engine_args
    assert sizes(launch) == ("16", "2", "16")  # the largest rank; the two readable adapters
    assert launch.engine_env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"  # the engine's, on loopback
    assert launch.lora is not None and launch.lora.max_rank == 16 and not launch.lora.runtime_updates
    assert launch.lora.base_names == ("tiny-llm",)  # served name, source and manifest name agree
    assert launch.describe()["lora"]["source"] == str(adapters)


def test_dynamic_mode_leaves_room_for_adapters_to_come(tmp_path: Path, adapters: Path) -> None:
    launch = plan(tmp_path, adapters, NIM_PEFT_REFRESH_INTERVAL="5")
    assert sizes(launch) == ("32", "8", "16")
    assert launch.lora is not None and launch.lora.refresh_interval == 5.0


def test_nim_variables_win_and_engine_arguments_win_over_them(tmp_path: Path, adapters: Path) -> None:
    launch = plan(tmp_path, adapters, NIM_MAX_LORA_RANK="64", NIM_MAX_GPU_LORAS="3", NIM_MAX_CPU_LORAS="4")
    assert sizes(launch) == ("64", "3", "4")
    launch = plan(tmp_path, adapters, NIM_MAX_LORA_RANK="64", NIM_PASSTHROUGH_ARGS="--max-lora-rank 128")
    assert launch.lora is not None and launch.lora.max_rank == 128  # the value the engine ends up with


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NIM_MAX_LORA_RANK": "20"}, "invalid NIM_MAX_LORA_RANK='20': vLLM serves ranks 1, 8, 16, 32"),
        (
            {"NIM_MAX_GPU_LORAS": "4", "NIM_MAX_CPU_LORAS": "2"},
            "NIM_MAX_CPU_LORAS=2 is below NIM_MAX_GPU_LORAS=4",
        ),
        ({"NIM_PEFT_REFRESH_INTERVAL": "0"}, "invalid NIM_PEFT_REFRESH_INTERVAL='0'"),
    ],
)
def test_bad_lora_settings_are_one_line_errors(
    tmp_path: Path, adapters: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        plan(tmp_path, adapters, **env)


def test_a_missing_folder_is_a_start_up_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="NIM_PEFT_SOURCE=.*/nope does not exist"):
        plan(tmp_path, tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        plan(tmp_path, tmp_path / "file")


def test_a_pinned_profile_without_lora_is_refused(tmp_path: Path, adapters: Path) -> None:
    with pytest.raises(NimctlError, match="has no LoRA support") as caught:
        plan(tmp_path, adapters, NIM_MODEL_PROFILE="vllm-fp32-tp1-pp1-cpu")
    assert LORA_PROFILE in (caught.value.hint or "")


@pytest.fixture
def front(tmp_path: Path, adapters: Path) -> Iterator[tuple[TestClient, ServerState]]:
    state = ServerState(plan(tmp_path, adapters))
    with TestClient(create_app(state, supervise=False)) as client:
        yield client, state


def test_runtime_routes_are_off_unless_asked_for(front: tuple[TestClient, ServerState]) -> None:
    client, state = front
    state.set_phase(Phase.ready)
    answer = client.post("/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "/etc"})
    assert answer.status_code == 403
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=true" in answer.json()["error"]["message"]
    assert client.post("/v1/unload_lora_adapter", json={"lora_name": "x"}).status_code == 403


def test_runtime_routes_without_lora_are_400(tmp_path: Path) -> None:
    environ = {"NIM_MODEL_PATH": "builtin://tiny-llm", "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true"}
    state = ServerState(build_plan(ServerConfig.from_env(environ, cache_path=tmp_path), environ={}))
    with TestClient(create_app(state, supervise=False)) as client:
        answer = client.post("/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "/x"})
    assert answer.status_code == 400
    assert answer.json()["error"]["message"].startswith("LoRA is off")


def test_metadata_reports_the_adapter_settings_before_any_is_loaded(
    front: tuple[TestClient, ServerState],
) -> None:
    client, _ = front
    lora = client.get("/v1/metadata").json()["loraAdapters"]
    assert lora["maxLoraRank"] == 16 and lora["loaded"] == [] and lora["refreshInterval"] is None
    assert client.get("/v1/manifest").json()["lora_adapters"] == []
