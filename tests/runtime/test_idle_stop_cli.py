"""`nimctl run --idle-stop`: the variable it passes, the label it leaves, the policies it refuses
(all --dry-run, nothing started); and a real local instance that stops itself (an engine test)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import psutil
import pytest

from nimctl import contract
from nimctl.errors import EXIT_USAGE
from nimctl.runtime.local_runtime import INSTANCE_FILE
from tests.runtime.test_cli import invoke

NAME = "i17idle-local"
# Long enough that `nimctl run -d` sees ready before the stop on a loaded machine.
IDLE_S = 10


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "NIMCTL_ASSUME_GPUS": "none",
        "NIMCTL_STATE_DIR": str(tmp_path / "state"),
        "NO_COLOR": "1",
        "HF_TOKEN": "",
        "NGC_API_KEY": "",
    }


def test_the_variable_and_label_travel_in_the_container_description(env: dict[str, str]) -> None:
    code, out, err = invoke(
        [
            "run",
            "tiny-llm",
            "--runtime",
            "docker",
            "--dry-run",
            "--idle-stop",
            "1h30m",
            "--restart",
            "on-failure",
        ],
        env,
    )
    assert code == 0, err
    assert f"-e {contract.IDLE_STOP}=1h30m " in out
    assert f"--label {contract.IDLE_STOP_LABEL}=5400 " in out
    assert "--restart on-failure " in out


def test_off_means_no_label(env: dict[str, str]) -> None:
    code, out, err = invoke(["run", "tiny-llm", "--runtime", "docker", "--dry-run", "--idle-stop", "0"], env)
    assert code == 0, err
    assert contract.IDLE_STOP_LABEL not in out


@pytest.mark.parametrize("policy", ["always", "unless-stopped"])
@pytest.mark.parametrize("how", [["--idle-stop", "30m"], ["-e", f"{contract.IDLE_STOP}=30m"]])
def test_policies_that_restart_an_exit_0_are_refused(
    policy: str, how: list[str], env: dict[str, str]
) -> None:
    code, out, err = invoke(
        ["run", "tiny-llm", "--runtime", "docker", "--dry-run", "--restart", policy, *how], env
    )
    assert code == EXIT_USAGE, out
    assert f"Error: --restart {policy} would start the instance again after each idle stop" in err
    assert "Hint: use --restart on-failure" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--idle-stop", "soon"], "bad --idle-stop 'soon': 'soon' is not a duration"),
        (["-e", f"{contract.IDLE_STOP}=5 minutes"], f"bad -e {contract.IDLE_STOP}=5 minutes"),
    ],
)
def test_a_bad_duration_is_a_one_line_usage_error(argv: list[str], message: str, env: dict[str, str]) -> None:
    code, _, err = invoke(["run", "tiny-llm", "--runtime", "docker", "--dry-run", *argv], env)
    assert code == EXIT_USAGE
    assert err.splitlines()[0].startswith(f"Error: {message}"), err


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.engine
def test_a_local_instance_stops_itself_and_ps_shows_it(
    env: dict[str, str], tmp_path: Path, model_cache: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    state = Path(env["NIMCTL_STATE_DIR"])
    argv = ["run", "tiny-vlm", "-d", "--runtime", "local", "--name", NAME, "--port", str(port)]
    argv += ["--cache", str(model_cache), "--idle-stop", f"{IDLE_S}s", "--timeout", "900"]
    code, out, err = invoke(argv, env)
    try:
        assert code == 0, out + err
        code, out, _ = invoke(["ps", "--format", "json"], env)
        [row] = [row for row in json.loads(out) if row["name"] == NAME]
        assert row["idle_stop_s"] == IDLE_S and row["idle_stopped"] is False
        launcher = psutil.Process(int(row["id"]))
        tree = [launcher, *launcher.children(recursive=True)]
        record = json.loads((state / "instances" / NAME / INSTANCE_FILE).read_text())
        assert record["idle_stop"] == IDLE_S  # what ps can read when the server does not answer

        deadline = time.monotonic() + 120
        while True:  # ps's own probes and scrapes all along: they do not keep it alive
            code, out, _ = invoke(["ps", "--all", "--format", "json"], env)
            [row] = [row for row in json.loads(out) if row["name"] == NAME]
            if row["state"] != "running":
                break
            assert time.monotonic() < deadline, "the instance did not stop itself"
            time.sleep(0.5)
        assert (row["state"], row["exit_code"], row["idle_stopped"]) == ("exited", 0, True)
        assert row["idle_stop_s"] == IDLE_S  # from the record: the server has ended
        code, out, _ = invoke(["ps", "--all"], env)
        assert "exited (0: idle stop)" in out
        code, out, _ = invoke(["logs", NAME], env)
        assert code == 0 and f"{contract.IDLE_STOP_LOG_MARK} no inference request for {IDLE_S}s" in out
        assert not [" ".join(p.cmdline()) for p in tree if _alive(p)]
    finally:
        code, out, err = invoke(["stop", NAME], env)
    assert code == 0, err
    assert not (state / "instances" / NAME).exists()
