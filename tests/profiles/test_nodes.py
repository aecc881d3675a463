"""Profiles across nodes (issue 15): the ``nodes`` tag, what runs on N nodes, the estimate per GPU
across nodes, the reasons and advice, ``--nodes`` on the command line, and golden files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nimctl.errors import ProfileError
from nimctl.gpu import parse_gpu_spec
from nimctl.profiles import Classified, classify, estimate, find_manifest, load_manifest, select_profile
from nimctl.profiles.loader import REPO_PROFILES_DIR
from nimctl.profiles.report import gpus_text, nim_text, profile_report
from nimctl.server.config import ServerConfig
from nimctl.server.selection_inputs import inputs_from_config, selection_inputs
from tests.profiles.test_cli import check_golden, run

QWEN72B = "qwen2.5-vl-72b-instruct"
TINY_VLM_CPU = "6a451bce28f32fc874a074b68f802abc7f810bbba8316ba70b8584af5eb48ea5"
TINY_VLM_2NODE = "12f7304f0d66b79884af917e03f55ce39b0b95e4b80d1100690f30b966b21b2a"
TINY_LLM_2NODE = "c44984e7311d8b37ed4ad80d652cab945b85eab4bdc6967bd7762dbf253b303c"


def _verdicts(model: str, gpus: str, nodes: int = 1) -> dict[str, Classified]:
    return {c.profile.name: c for c in classify(find_manifest(model), parse_gpu_spec(gpus), nodes=nodes)}


def _with_profile(tmp_path: Path, tags: str, args: str = "") -> Path:
    """tiny-llm's manifest with its first profile's tags and arguments replaced."""
    text = (REPO_PROFILES_DIR / "tiny-llm.yaml").read_text(encoding="utf-8")
    head = text[: text.index("profiles:")]
    path = tmp_path / "tiny-llm.yaml"
    path.write_text(
        head + "profiles:\n  - id: " + "a" * 64 + "\n    tags: {" + tags + f"}}\n    engine_args: [{args}]\n",
        encoding="utf-8",
    )
    return path


# -- the tag ----------------------------------------------------------------------------------


def test_nodes_tag_defaults_to_one_and_names_only_multi_node_profiles() -> None:
    manifest = find_manifest(QWEN72B)
    by_name = {p.name: p for p in manifest.profiles}
    single = by_name["vllm-bf16-tp8-pp1"]
    assert "nodes" not in single.tags and (single.nodes, single.gpus_per_node, single.gpu_count) == (1, 8, 8)
    two = by_name["vllm-bf16-tp8-pp2-2node"]
    assert two.tags["nodes"] == "2" and (two.nodes, two.gpus_per_node, two.gpu_count) == (2, 8, 16)
    assert two.engine_arg("--pipeline-parallel-size") == "2"
    assert by_name["vllm-fp8-tp4-pp2-2node"].gpus_per_node == 4
    cpu = find_manifest("tiny-vlm").profile_by_id_or_name(TINY_VLM_2NODE)
    assert cpu is not None and cpu.name == "vllm-fp32-tp2-pp1-cpu-2node"
    assert (cpu.nodes, cpu.gpus_per_node) == (2, 0)


def test_tiny_llm_has_the_same_two_node_cpu_profile() -> None:
    profile = find_manifest("tiny-llm").profile_by_id_or_name("vllm-fp32-tp2-pp1-cpu-2node")
    assert profile is not None and profile.id == TINY_LLM_2NODE
    assert profile.env == {"VLLM_CPU_KVCACHE_SPACE": "1"}


@pytest.mark.parametrize(
    ("tags", "args", "message"),
    [
        (
            'llm_engine: vllm, precision: bf16, tp: "2", pp: "1", nodes: "4", profile: latency',
            '"--tensor-parallel-size", "2"',
            "tp x pp is 2, not divisible by nodes 4: every node runs the same number of GPUs",
        ),
        (
            'llm_engine: vllm, precision: bf16, tp: "1", pp: "1", nodes: "0", profile: latency',
            "",
            "profiles[0].tags.nodes",
        ),
        (
            'llm_engine: vllm, precision: fp32, tp: "4", pp: "1", nodes: "2", profile: latency, device: cpu',
            '"--tensor-parallel-size", "4"',
            "a cpu profile across 2 nodes has tp x pp = 2 (one CPU rank per node)",
        ),
        (
            'llm_engine: vllm, precision: bf16, tp: "2", pp: "1", nodes: 2, profile: latency',
            '"--tensor-parallel-size", "2"',
            """tag 'nodes' must be a string: write nodes: "2\"""",
        ),
    ],
)
def test_bad_nodes_tags_are_refused(tmp_path: Path, tags: str, args: str, message: str) -> None:
    from nimctl.errors import ManifestError

    with pytest.raises(ManifestError) as caught:
        load_manifest(_with_profile(tmp_path, tags, args))
    assert message in caught.value.message


def test_a_two_node_cpu_profile_loads(tmp_path: Path) -> None:
    from nimctl.profiles.ids import profile_id

    tags = 'llm_engine: vllm, precision: fp32, tp: "1", pp: "2", nodes: "2", profile: latency, device: cpu'
    manifest = load_manifest(_with_profile(tmp_path, tags, '"--pipeline-parallel-size", "2"'))
    (profile,) = manifest.profiles
    assert profile.name == "vllm-fp32-tp1-pp2-cpu-2node" and profile.nodes == 2
    assert profile.id != profile_id("tiny-llm", {k: v for k, v in profile.tags.items() if k != "nodes"})


# -- what runs on N nodes --------------------------------------------------------------------------


def test_one_node_never_runs_a_multi_node_profile() -> None:
    items = _verdicts(QWEN72B, "L40S:8")
    for name in ("vllm-fp8-tp4-pp2-2node", "vllm-bf16-tp8-pp2-2node"):
        item = items[name]
        assert (item.status, item.reason) == ("incompatible", "needs 2 nodes (--nodes 2)")
    assert items["vllm-bf16-tp8-pp2-2node"].fix == "--nodes 2 (2 nodes x 8 x NVIDIA L40S)"
    # The choice on one node is what it was before multi-node profiles existed.
    assert select_profile(find_manifest(QWEN72B), parse_gpu_spec("L40S:8")).profile.name == "vllm-fp8-tp4-pp1"


def test_tiny_models_choose_their_single_node_cpu_profile_unless_two_nodes_are_asked_for() -> None:
    tiny = find_manifest("tiny-vlm")
    none = parse_gpu_spec("none")
    assert select_profile(tiny, none).profile.id == TINY_VLM_CPU
    two = select_profile(tiny, none, nodes=2)
    assert two.profile.id == TINY_VLM_2NODE
    assert two.reason == (
        "vllm-fp32-tp2-pp1-cpu-2node: the only runnable profile; runs on the CPU (vLLM CPU backend) across "
        "2 nodes; on 2 nodes, each: no GPU (--gpus none: no GPU assumed); using the CPU"
    )
    assert select_profile(find_manifest("tiny-llm"), none, nodes=2).profile.id == TINY_LLM_2NODE
    with pytest.raises(ProfileError) as caught:
        select_profile(tiny, none, nodes=3)
    assert caught.value.message.startswith("no runnable profile for tiny-vlm on 3 nodes, each: no GPU")


def test_n_nodes_run_only_the_profiles_for_n_nodes_and_the_reason_says_so() -> None:
    items = _verdicts(QWEN72B, "L40S:8", nodes=2)
    runnable = {name for name, item in items.items() if item.runnable}
    assert runnable == {"vllm-fp8-tp4-pp2-2node", "vllm-bf16-tp8-pp2-2node"}
    bf16 = items["vllm-bf16-tp8-pp2-2node"]
    assert bf16.reason == "2 nodes x 8 x NVIDIA L40S: fits: needs 13.0 GiB/GPU, 43.2 GiB usable"
    assert bf16.gpus == tuple(range(8))
    single = items["vllm-bf16-tp8-pp1"]
    assert single.reason == ("a single-node profile: a group of 2 nodes runs one profile across all of them")
    assert single.fix == "--nodes 1 (1 node x 8 x NVIDIA L40S)"
    manifest, gpus = find_manifest(QWEN72B), parse_gpu_spec("L40S:8")
    throughput = select_profile(manifest, gpus, nodes=2)
    assert throughput.profile.name == "vllm-fp8-tp4-pp2-2node"
    assert "8 GPUs (4 per node) (throughput: fewest GPUs)" in throughput.reason
    assert throughput.reason.endswith("; on 2 nodes, each: 8 x NVIDIA L40S (48 GiB) [assumed]")
    # The example: bf16 tp8-pp2 across 2 nodes of 8 x L40S, pinned (fp8 comes first by the rule).
    pinned = select_profile(manifest, gpus, "vllm-bf16-tp8-pp2-2node", nodes=2)
    assert pinned.pinned and pinned.reason == (
        "vllm-bf16-tp8-pp2-2node: pinned by the user; 2 nodes x 8 x NVIDIA L40S: fits: needs 13.0 GiB/GPU, "
        "43.2 GiB usable on 2 nodes, each: 8 x NVIDIA L40S (48 GiB) [assumed]"
    )


def test_another_node_count_is_named() -> None:
    item = _verdicts(QWEN72B, "L40S:8", nodes=3)["vllm-bf16-tp8-pp2-2node"]
    assert item.reason == "needs 2 nodes (--nodes 2), not 3"


def test_too_few_gpus_per_node() -> None:
    item = _verdicts(QWEN72B, "L40S:4", nodes=2)["vllm-bf16-tp8-pp2-2node"]
    assert item.reason == "needs 8 GPUs per node, 4 available per node"
    assert item.fix == "4 more GPUs per node"
    # Four per node is what the fp8 profile needs: it runs.
    assert _verdicts(QWEN72B, "L40S:4", nodes=2)["vllm-fp8-tp4-pp2-2node"].runnable


def test_a_pinned_multi_node_profile_on_one_node_is_refused_with_the_reason() -> None:
    with pytest.raises(ProfileError) as caught:
        select_profile(find_manifest("tiny-vlm"), parse_gpu_spec("none"), TINY_VLM_2NODE)
    assert "cannot run here (incompatible): needs 2 nodes (--nodes 2)" in caught.value.message


# -- memory per GPU across nodes ----------------------------------------------------------------


def test_memory_is_per_gpu_across_all_nodes() -> None:
    manifest = find_manifest(QWEN72B)
    by_name = {p.name: p for p in manifest.profiles}
    one = estimate(manifest.model, by_name["vllm-bf16-tp8-pp1"])
    two = estimate(manifest.model, by_name["vllm-bf16-tp8-pp2-2node"])
    # 16 GPUs hold the weights; each holds the KV cache of 80 / 2 layers.
    assert two.weights == int(manifest.model.parameters * 2 / 16)
    assert two.weights == pytest.approx(one.weights / 2, abs=1)
    assert two.kv_per_token * 2 == one.kv_per_token
    assert two.overhead == one.overhead


# -- low-memory advice ----------------------------------------------------------------------------


def test_when_no_single_node_holds_it_the_advice_names_the_multi_node_profile() -> None:
    items = _verdicts(QWEN72B, "L4:8")
    low = [item for item in items.values() if item.status == "low_memory"]
    assert low
    for item in low:
        assert item.reason.endswith("; or --nodes 2: vllm-fp8-tp4-pp2-2node, vllm-bf16-tp8-pp2-2node")
    with pytest.raises(ProfileError) as caught:
        select_profile(find_manifest(QWEN72B), parse_gpu_spec("L4:8"))
    assert caught.value.hint is not None
    assert caught.value.hint.startswith(
        "vllm-fp8-tp4-pp2-2node runs with --nodes 2 (2 nodes x 4 x NVIDIA L4); "
        "vllm-bf16-tp8-pp2-2node runs with --nodes 2 (2 nodes x 8 x NVIDIA L4); closest: vllm-fp8-tp4-pp1: "
    )


def test_no_advice_when_a_single_node_profile_runs() -> None:
    for item in _verdicts(QWEN72B, "L40S:2").values():
        assert "--nodes" not in item.reason or item.profile.nodes == 2


def test_no_advice_when_the_multi_node_profile_would_not_run_either() -> None:
    # One L4 per node is too few for any multi-node profile: nothing to name.
    with pytest.raises(ProfileError) as caught:
        select_profile(find_manifest(QWEN72B), parse_gpu_spec("L4"))
    assert caught.value.hint is not None and caught.value.hint.startswith("closest: vllm-fp8-tp4-pp1: ")


# -- listing and inputs ---------------------------------------------------------------------------


def test_report_and_nim_text_show_the_nodes() -> None:
    report = profile_report(find_manifest("tiny-vlm"), parse_gpu_spec("none"), nodes=2)
    assert report.to_dict()["nodes"] == 2
    text = nim_text(report)
    assert "- Nodes: 2, each with these GPUs" in text
    assert f"SELECTED: {TINY_VLM_2NODE}" in text
    names = {item.profile.name: gpus_text(item) for item in report.classification}
    assert names == {"vllm-fp32-tp1-pp1-cpu": "cpu", "vllm-fp32-tp2-pp1-cpu-2node": "2 nodes x cpu"}
    two = profile_report(find_manifest(QWEN72B), parse_gpu_spec("L40S:8"), nodes=2)
    by_name = {item.profile.name: item for item in two.classification}
    assert gpus_text(by_name["vllm-bf16-tp8-pp2-2node"]) == "2 nodes x 8"
    assert by_name["vllm-bf16-tp8-pp2-2node"].to_dict()["nodes"] == 2


def test_selection_inputs_read_the_node_count() -> None:
    assert selection_inputs({}).nodes == 1
    assert selection_inputs({"NIM_NUM_COMPUTE_NODES": "2"}).nodes == 2
    assert selection_inputs({"NIM_NUM_COMPUTE_NODES": "2"}, nodes=1).nodes == 1
    # A worker's rank is not a selection input: a worker selects what the leader does.
    env = {"NIM_NUM_COMPUTE_NODES": "2", "NIM_NODE_RANK": "1"}
    assert selection_inputs(env).nodes == 2
    config = ServerConfig.from_env({"NIM_NUM_COMPUTE_NODES": "2"})
    assert inputs_from_config(config).nodes == 2


# -- the command line -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1"])
def test_bad_nodes_is_a_one_line_usage_error(value: str) -> None:
    for command in ("list", "select"):
        code, out, err = run("profiles", command, "tiny-vlm", "--nodes", value)
        assert (code, out) == (2, "")
        lines = err.splitlines()
        assert lines[0] == f"Error: bad --nodes {value}: a group has 1 node or more"
        assert lines[1].startswith("Hint: --nodes N plans N identical nodes")
        assert len(lines) == 2


def test_nodes_that_are_not_a_number_are_a_usage_error() -> None:
    code, out, err = run("profiles", "list", "tiny-vlm", "--nodes", "two")
    assert (code, out) == (2, "")
    assert err.startswith("Error: Invalid value for '--nodes'")


def test_select_takes_the_node_count_from_the_option_or_nim_num_compute_nodes() -> None:
    assert run("profiles", "select", "tiny-vlm", "--gpus", "none", "--nodes", "2")[:2] == (
        0,
        TINY_VLM_2NODE + "\n",
    )
    assert run("profiles", "select", "tiny-vlm", "--gpus", "none", NIM_NUM_COMPUTE_NODES="2")[:2] == (
        0,
        TINY_VLM_2NODE + "\n",
    )
    code, out, _ = run(
        "profiles", "select", "tiny-vlm", "--gpus", "none", "--nodes", "1", NIM_NUM_COMPUTE_NODES="2"
    )
    assert (code, out) == (0, TINY_VLM_CPU + "\n")


def test_show_with_nodes() -> None:
    code, out, _ = run(
        "profiles", "show", TINY_VLM_2NODE[:12], "--gpus", "none", "--nodes", "2", "-f", "json"
    )
    assert code == 0
    data = json.loads(out)
    assert (data["nodes"], data["selected"], data["classification"]["status"]) == (2, True, "runnable")


@pytest.mark.parametrize(
    ("golden", "args"),
    [
        ("profiles_list_qwen72b_8xL40S_2nodes.txt", [QWEN72B, "--assume-gpus", "L40S:8", "--nodes", "2"]),
        ("profiles_list_qwen72b_8xL4.txt", [QWEN72B, "--assume-gpus", "L4:8"]),
        ("profiles_list_tiny_vlm_none_2nodes.txt", ["tiny-vlm", "--assume-gpus", "none", "--nodes", "2"]),
        ("profiles_list_all_8xL40S_2nodes.txt", ["--assume-gpus", "L40S:8", "--nodes", "2"]),
    ],
)
def test_profiles_list_nodes_table(golden: str, args: list[str]) -> None:
    code, out, err = run("profiles", "list", *args)
    assert (code, err) == (0, "")
    check_golden(golden, out)


@pytest.mark.parametrize(
    ("golden", "args"),
    [
        ("profiles_list_qwen72b_8xL40S_2nodes.json", [QWEN72B, "--assume-gpus", "L40S:8", "--nodes", "2"]),
        ("profiles_list_tiny_vlm_none_2nodes.json", ["tiny-vlm", "--assume-gpus", "none", "--nodes", "2"]),
    ],
)
def test_profiles_list_nodes_json(golden: str, args: list[str]) -> None:
    code, out, _ = run("profiles", "list", *args, "--format", "json")
    assert code == 0
    assert json.loads(out)["nodes"] == 2
    check_golden(golden, out)


@pytest.mark.parametrize(
    ("golden", "args"),
    [
        ("profiles_select_qwen72b_8xL40S_2nodes", [QWEN72B, "--assume-gpus", "L40S:8", "--nodes", "2"]),
        ("profiles_select_tiny_vlm_none_2nodes", ["tiny-vlm", "--assume-gpus", "none", "--nodes", "2"]),
    ],
)
def test_profiles_select_nodes(golden: str, args: list[str]) -> None:
    code, out, err = run("profiles", "select", *args)
    assert (code, err) == (0, "")
    check_golden(golden + ".txt", out)
    code, out, _ = run("profiles", "select", *args, "--format", "json")
    assert code == 0 and json.loads(out)["nodes"] == 2
    check_golden(golden + ".json", out)


def test_select_on_one_node_of_l4_names_the_multi_node_profile() -> None:
    code, out, err = run("profiles", "select", QWEN72B, "--assume-gpus", "L4:8")
    assert (code, out) == (8, "")
    assert err.splitlines()[1].startswith("Hint: vllm-fp8-tp4-pp2-2node runs with --nodes 2 (2 nodes x 4 x")
