"""The hub emulation, checked with the real huggingface_hub client: what nimctl's pull tests can rely on."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub import file_download as hf_file_download
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

from nimctl.models.builtin import MARKER_FILE
from tests.conftest import TINY_VLM_REPO
from tests.hub_emulation import HubEmulation
from tests.hub_repos import git_blob_sha1, tiny_vlm_folder

WEIGHTS = "model.safetensors"


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@dataclass
class SmallRepo:
    hub: HubEmulation
    name: str
    content: dict[str, bytes]


@pytest.fixture
def small(hf_env: HubEmulation, tmp_path: Path) -> SmallRepo:
    """A fresh repo per test, with a nested folder, one LFS file (1 MiB) and two git files."""
    repo = f"nimctl-test/small-{tmp_path.name}"
    content = {
        "weights.bin": bytes(range(256)) * 4096,  # 1 MiB: LFS
        "config.json": b'{"a": 1}\n',
        "sub/dir/notes.txt": b"hello\n",
    }
    folder = tmp_path / "src"
    for path, data in content.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)
    hf_env.add_revision(repo, folder)
    return SmallRepo(hf_env, repo, content)


def test_snapshot_at_main_and_v1(hf_env: HubEmulation, model_cache: Path, tmp_path: Path) -> None:
    main = Path(snapshot_download(TINY_VLM_REPO, cache_dir=tmp_path / "cache"))
    v1 = Path(snapshot_download(TINY_VLM_REPO, revision="v1", cache_dir=tmp_path / "cache"))

    assert main.name == hf_env.tiny_vlm_main and v1.name == hf_env.tiny_vlm_v1
    assert set(files_of(main)) == {*files_of(v1), "README.md"}
    assert b"second commit" in (main / "README.md").read_bytes()
    # The v1 snapshot is the generated model byte for byte (the fixture's copy of it, without the marker).
    generated = files_of(tiny_vlm_folder(model_cache))
    del generated[MARKER_FILE]
    assert files_of(v1) == generated
    # Files the two commits share were fetched once: the cache dedups by etag.
    assert hf_env.bytes_served(TINY_VLM_REPO, WEIGHTS) == (v1 / WEIGHTS).stat().st_size
    assert ("GET", f"/api/models/{TINY_VLM_REPO}/revision/main") in hf_env.requests()


def test_snapshot_by_commit_skips_model_info(hf_env: HubEmulation, tmp_path: Path) -> None:
    folder = Path(snapshot_download(TINY_VLM_REPO, revision=hf_env.tiny_vlm_v1, cache_dir=tmp_path))
    assert "README.md" not in files_of(folder)
    assert not [path for _, path in hf_env.requests() if "/revision/" in path]


def test_model_info_and_tree_metadata(small: SmallRepo) -> None:
    repo, content = small.name, small.content
    api = HfApi()
    info = api.model_info(repo, files_metadata=True)
    assert info.sha is not None and len(info.sha) == 40 and info.gated is False
    siblings = {s.rfilename: s for s in info.siblings or []}
    assert set(siblings) == set(content)
    weights = siblings["weights.bin"]
    assert weights.size == len(content["weights.bin"]) and weights.lfs is not None
    assert weights.lfs.sha256 == hashlib.sha256(content["weights.bin"]).hexdigest()
    assert siblings["config.json"].lfs is None
    assert siblings["config.json"].blob_id == git_blob_sha1(content["config.json"])

    top = {f.path: type(f).__name__ for f in api.list_repo_tree(repo)}
    assert top == {"config.json": "RepoFile", "weights.bin": "RepoFile", "sub": "RepoFolder"}
    nested = [f.path for f in api.list_repo_tree(repo, path_in_repo="sub/dir", revision=info.sha)]
    assert nested == ["sub/dir/notes.txt"]


def test_declare_size_shows_in_metadata_only(small: SmallRepo, tmp_path: Path) -> None:
    hub, repo, content = small.hub, small.name, small.content
    hub.declare_size(repo, "weights.bin", 10**15)
    api = HfApi()
    (entry,) = [f for f in api.list_repo_tree(repo, recursive=True) if f.path == "weights.bin"]
    assert entry.size == 10**15
    path = hf_hub_download(repo, "weights.bin", cache_dir=tmp_path)  # /resolve still tells the truth
    assert Path(path).read_bytes() == content["weights.bin"]


def test_resume_after_cut_connection(hf_env: HubEmulation, tmp_path: Path) -> None:
    content = bytes(range(256)) * (64 * 1024)  # 16 MiB
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / WEIGHTS).write_bytes(content)
    repo = "nimctl-test/resume"
    hf_env.add_revision(repo, tmp_path / "src")
    hf_env.fail_after(repo, WEIGHTS, 10 * 1024 * 1024)
    # huggingface_hub's http_get retries a cut body itself (after a 1 s sleep), with Range from what it has
    # written. It writes in 10 MiB chunks (DOWNLOAD_CHUNK_SIZE) and what httpx2 buffered towards the next
    # chunk is lost, so a cut below 10 MiB starts over at 0; a cut at 10 MiB resumes exactly there.
    path = hf_hub_download(repo, WEIGHTS, cache_dir=tmp_path / "cache")
    assert Path(path).read_bytes() == content
    assert hf_env.bytes_served(repo, WEIGHTS) == len(content)
    assert [m for m, p in hf_env.requests() if p.endswith(WEIGHTS)] == ["HEAD", "GET", "GET"]


def test_retries_exhausted_then_a_new_call_completes(
    small: SmallRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub, repo, content = small.hub, small.name, small.content
    monkeypatch.setattr(hf_file_download, "time", _NoSleep())  # its 5 retries sleep 1 s each
    hub.fail_after(repo, "weights.bin", 0, times=6)
    with pytest.raises(Exception, match="peer closed connection"):  # httpx2.RemoteProtocolError, unwrapped
        hf_hub_download(repo, "weights.bin", cache_dir=tmp_path)
    assert [m for m, p in hub.requests() if p.endswith("/weights.bin")] == ["HEAD"] + ["GET"] * 6
    # The failed call deleted its partial file (named uniquely per call): nothing carries over between calls.
    assert not list(tmp_path.rglob("*.incomplete"))
    path = hf_hub_download(repo, "weights.bin", cache_dir=tmp_path)
    assert Path(path).read_bytes() == content["weights.bin"]
    assert hub.bytes_served(repo, "weights.bin") == len(content["weights.bin"])


def test_stall_holds_the_body_until_released(small: SmallRepo, tmp_path: Path) -> None:
    hub, repo, content = small.hub, small.name, small.content
    release = hub.stall_after(repo, "weights.bin", 200_000)
    result: list[str] = []
    worker = threading.Thread(
        target=lambda: result.append(hf_hub_download(repo, "weights.bin", cache_dir=tmp_path))
    )
    worker.start()
    deadline = time.monotonic() + 5
    while hub.bytes_served(repo, "weights.bin") < 200_000 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert hub.bytes_served(repo, "weights.bin") == 200_000 and worker.is_alive()
    release.set()
    worker.join(timeout=10)
    assert Path(result[0]).read_bytes() == content["weights.bin"]


def test_corrupt_file_is_not_caught_by_the_client(small: SmallRepo, tmp_path: Path) -> None:
    hub, repo, content = small.hub, small.name, small.content
    hub.corrupt(repo, "weights.bin")
    # huggingface_hub 2.4 checks only the size of a plain-HTTP download, never its sha256: the corrupt bytes land
    # in the cache under the advertised sha256. Verifying is up to the caller (nimctl).
    path = Path(hf_hub_download(repo, "weights.bin", cache_dir=tmp_path))
    data = path.read_bytes()
    assert len(data) == len(content["weights.bin"]) and data != content["weights.bin"]
    assert (
        path.resolve().name
        == hashlib.sha256(content["weights.bin"]).hexdigest()
        != hashlib.sha256(data).hexdigest()
    )


def test_unknown_revision(hf_env: HubEmulation, tmp_path: Path) -> None:
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(TINY_VLM_REPO, revision="no-such-branch", cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(TINY_VLM_REPO, "config.json", revision="0" * 40, cache_dir=tmp_path)


def test_unknown_repo(hf_env: HubEmulation, tmp_path: Path) -> None:
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("nimctl-test/no-such-model", cache_dir=tmp_path)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("nimctl-test/no-such-model", "config.json", cache_dir=tmp_path)


def test_gated_repo(small: SmallRepo, tmp_path: Path) -> None:
    hub, repo, content = small.hub, small.name, small.content
    hub.require_token(repo, "hf_right")
    with pytest.raises(GatedRepoError) as no_token:
        snapshot_download(repo, cache_dir=tmp_path / "a")
    assert no_token.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as wrong_token:
        hf_hub_download(repo, "config.json", cache_dir=tmp_path / "a", token="hf_wrong")
    assert wrong_token.value.response.status_code == 403
    assert HfApi().model_info(repo).gated == "manual"  # as on the hub: the card is public, the files are not
    folder = Path(snapshot_download(repo, cache_dir=tmp_path / "b", token="hf_right"))
    assert files_of(folder) == content


def test_range_requests_directly(small: SmallRepo) -> None:
    import httpx2

    hub, repo, content = small.hub, small.name, small.content
    url = f"{hub.url}/{repo}/resolve/main/weights.bin"
    tail = httpx2.get(url, headers={"Range": "bytes=1048000-"})
    assert tail.status_code == 206 and tail.content == content["weights.bin"][1048000:]
    assert tail.headers["Content-Range"] == f"bytes 1048000-{len(content['weights.bin']) - 1}/1048576"
    assert httpx2.get(url, headers={"Range": "bytes=2000000-"}).status_code == 416
    head = httpx2.head(f"{hub.url}/{repo}/resolve/main/config.json")
    assert (
        head.headers["ETag"] == f'"{git_blob_sha1(content["config.json"])}"'
        and "X-Linked-Etag" not in head.headers
    )


class _NoSleep:
    """``time`` for huggingface_hub.file_download, minus the sleeps between retries."""

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        return None
