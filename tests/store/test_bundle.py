"""``nimctl bundle export|import`` without Docker (``--no-image``): a model pulled from the hub emulation
carried to a second, empty cache, and the archives an import must refuse whole."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from nimctl.errors import EXIT_INTEGRITY, EXIT_MODEL_UNAVAILABLE
from nimctl.models.builtin import is_complete
from nimctl.store import layout
from nimctl.store.pull import pull, require_cached
from tests.cli.conftest import error_line, nimctl
from tests.hub_emulation import HubEmulation
from tests.store.conftest import REPO

WEIGHTS = "model.safetensors"


@pytest.fixture
def pulled(hf_env: HubEmulation, host_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The host cache holding the tiny VLM at main and at v1, as `nimctl pull` leaves it."""
    monkeypatch.setenv("NIMCTL_ASSUME_GPUS", "none")
    pull(REPO, host_cache)
    pull(REPO, host_cache, revision="v1")
    return host_cache


def export(*argv: str) -> dict[str, object]:
    result = nimctl("bundle", "export", *argv, "--no-image", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""  # not a terminal: no bar, only the summary
    return json.loads(result.stdout)


def files_under(root: Path) -> dict[str, bytes | str]:
    """Every file (its bytes) and symlink (its target) under ``root``."""
    found: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*filenames, *dirnames]:
            path = Path(dirpath) / name
            key = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[key] = os.readlink(path)
            elif path.is_file():
                found[key] = path.read_bytes()
    return found


@pytest.fixture
def bundle(pulled: Path, tmp_path: Path) -> Path:
    path = tmp_path / "tiny.tar"
    export("tiny-vlm-hub", "-o", str(path))
    return path


def test_export_then_import_into_an_empty_cache(hf_env: HubEmulation, pulled: Path, tmp_path: Path) -> None:
    archive = tmp_path / "tiny.tar"
    summary = export("tiny-vlm-hub", "-o", str(archive))
    assert summary["model"] == f"hf://{REPO}" and summary["commit"] == hf_env.tiny_vlm_main
    assert summary["image"] is None and summary["file"] == str(archive.resolve())
    assert not Path(f"{archive}.partial").exists()
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[0] == "bundle.json" and names[-1] == "SHA256SUMS" and len(names) == summary["members"]
    assert "manifest/tiny-vlm-hub.yaml" in names

    second = tmp_path / "second"
    result = nimctl("bundle", "import", str(archive), "--cache", str(second), "--format", "json")
    assert result.exit_code == 0, result.stderr
    imported = json.loads(result.stdout)
    snapshot = require_cached(REPO, second)  # the main ref and every file of the commit, offline
    assert snapshot.name == hf_env.tiny_vlm_main and imported["folder"] == str(snapshot)
    assert imported["image_loaded"] is False and imported["refs"] == ["main"]
    assert imported["files"] == len(list(snapshot.iterdir()))
    # Byte for byte, symlinks kept as symlinks: the model's folder as the first cache holds it,
    # restricted to the exported commit (v1's ref is not carried; its files are all main's too).
    source = files_under(layout.repo_dir(pulled, REPO))
    source = {k: v for k, v in source.items() if hf_env.tiny_vlm_v1 not in k and k != "refs/v1"}
    assert files_under(layout.repo_dir(second, REPO)) == source
    assert (snapshot / WEIGHTS).is_symlink()
    manifest = Path(imported["manifest"])
    assert manifest == second / "manifests" / "tiny-vlm-hub.yaml" and manifest.is_file()
    assert imported["run"] == f"nimctl run {manifest} --offline --cache {second}"
    assert not [p for p in second.iterdir() if p.name.startswith(".nimctl-import-")]


def test_an_older_revision_carries_its_own_snapshot_only(
    hf_env: HubEmulation, pulled: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "v1.tar"
    summary = export(f"hf://{REPO}@v1", "-o", str(archive))
    assert summary["commit"] == hf_env.tiny_vlm_v1 and summary["revision"] == "v1"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert not [n for n in names if hf_env.tiny_vlm_main in n or n.endswith("README.md")]
    second = tmp_path / "second"
    assert nimctl("bundle", "import", str(archive), "--cache", str(second)).exit_code == 0
    assert require_cached(REPO, second, revision="v1").name == hf_env.tiny_vlm_v1


def test_a_model_not_fully_in_the_cache_is_refused(pulled: Path, tmp_path: Path) -> None:
    snapshot = require_cached(REPO, pulled)
    (snapshot / WEIGHTS).resolve().unlink()  # the blob: the snapshot's link now dangles
    archive = tmp_path / "partial.tar"
    result = nimctl("bundle", "export", "tiny-vlm-hub", "-o", str(archive), "--no-image")
    assert result.exit_code == EXIT_MODEL_UNAVAILABLE, result.stderr
    assert WEIGHTS in error_line(result) and "Hint:" in result.stderr
    assert list(tmp_path.glob("partial.tar*")) == []


def _member(archive: Path, suffix: str) -> tarfile.TarInfo:
    with tarfile.open(archive) as tar:
        return next(m for m in tar.getmembers() if m.name.endswith(suffix))


def _refused(archive: Path, cache: Path) -> str:
    cache.mkdir(exist_ok=True)
    result = nimctl("bundle", "import", str(archive), "--cache", str(cache))
    assert result.exit_code == EXIT_INTEGRITY, result.stderr
    assert "Traceback" not in result.stderr
    assert list(cache.iterdir()) == []  # nothing half-imported, no scratch folder left
    return error_line(result)


def test_a_corrupt_member_is_named_and_nothing_is_imported(bundle: Path, tmp_path: Path) -> None:
    with tarfile.open(bundle) as tar:  # the weights' blob: the member the snapshot's link points at
        link = next(m for m in tar.getmembers() if m.name.endswith(f"/{WEIGHTS}"))
        blob = next(
            m for m in tar.getmembers() if m.name.endswith("/blobs/" + link.linkname.rsplit("/", 1)[1])
        )
    with bundle.open("r+b") as data:
        data.seek(blob.offset_data + blob.size // 2)
        byte = data.read(1)
        data.seek(-1, io.SEEK_CUR)
        data.write(bytes([byte[0] ^ 0xFF]))
    line = _refused(bundle, tmp_path / "second")
    assert f"member {blob.name} ({WEIGHTS}) is corrupt" in line


def test_a_truncated_archive_is_refused(bundle: Path, tmp_path: Path) -> None:
    weights = _member(bundle, "/blobs/" + _member(bundle, "/" + WEIGHTS).linkname.rsplit("/", 1)[1])
    with bundle.open("r+b") as data:
        data.truncate(weights.offset_data + weights.size // 2)  # cut inside the weights' data
    line = _refused(bundle, tmp_path / "second")
    assert "truncated" in line and weights.name in line, line


def test_an_archive_that_ends_between_members_lacks_its_checksums(bundle: Path, tmp_path: Path) -> None:
    sums = _member(bundle, "SHA256SUMS")
    with bundle.open("r+b") as data:
        data.truncate(sums.offset)  # whole members only, SHA256SUMS gone
    line = _refused(bundle, tmp_path / "second")
    assert "truncated" in line and "SHA256SUMS" in line


def _with_extra(bundle: Path, dest: Path, extra: tarfile.TarInfo, data: bytes = b"") -> Path:
    """``bundle`` with ``extra`` added before its checksum list."""
    with tarfile.open(bundle) as src, tarfile.open(dest, "w") as out:
        for member in src.getmembers():
            if member.name == "SHA256SUMS":
                out.addfile(extra, io.BytesIO(data) if extra.isreg() else None)
            out.addfile(member, src.extractfile(member) if member.isreg() else None)
    return dest


@pytest.mark.parametrize(
    ("name", "link"),
    [
        ("../evil", None),
        ("/tmp/evil", None),
        ("cache/huggingface/models--nimctl-test--tiny-vlm/refs/x", "../../../../evil"),
    ],
)
def test_a_member_escaping_the_folder_is_refused(
    bundle: Path, tmp_path: Path, name: str, link: str | None
) -> None:
    extra = tarfile.TarInfo(name)
    if link is None:
        extra.size = 4
    else:
        extra.type, extra.linkname = tarfile.SYMTYPE, link
    evil = _with_extra(bundle, tmp_path / "evil.tar", extra, b"evil")
    line = _refused(evil, tmp_path / "second")
    assert "refused" in line and (name in line or name.lstrip("/") in line), line
    assert not (tmp_path / "evil").exists()


def test_a_builtin_model_round_trips(
    model_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NIMCTL_ASSUME_GPUS", "none")
    archive = tmp_path / "builtin.tar"
    summary = export("builtin://tiny-vlm", "-o", str(archive), "--cache", str(model_cache))
    assert summary["model"] == "builtin://tiny-vlm" and summary["commit"] is None
    second = tmp_path / "second"
    result = nimctl("bundle", "import", str(archive), "--cache", str(second))
    assert result.exit_code == 0, result.stderr
    assert "nimctl run" in result.stdout and "--offline" in result.stdout
    folder = layout.builtin_dir(second) / "tiny-vlm"
    assert is_complete("tiny-vlm", folder)
    assert files_under(folder) == files_under(layout.builtin_dir(model_cache) / "tiny-vlm")
    # A second import replaces the folder whole (one rename), leaving nothing beside it.
    assert nimctl("bundle", "import", str(archive), "--cache", str(second)).exit_code == 0
    assert sorted(p.name for p in second.iterdir()) == ["builtin", "manifests"]


# -- archives written by someone else: bundle.json and SHA256SUMS both lie ------------------------

MODEL_DIR = "cache/huggingface/models--nimctl-test--tiny-vlm"


def _forge(
    bundle: Path,
    dest: Path,
    *,
    info: dict[str, object] | None = None,
    extra: list[tuple[str, str | bytes]] = (),  # type: ignore[assignment]
) -> Path:
    """``bundle`` with bundle.json's fields replaced by ``info`` and ``extra`` members (a str: a
    symlink to it, bytes: a file) added before a SHA256SUMS recomputed to match, as an attacker
    would: the checksum check passes, so only the import's own checks can refuse it."""
    import hashlib

    sums: dict[str, str] = {}

    def add(out: tarfile.TarFile, member: tarfile.TarInfo, data: bytes | None) -> None:
        if data is not None:
            member.size = len(data)
            sums[member.name] = hashlib.sha256(data).hexdigest()
        out.addfile(member, io.BytesIO(data) if data is not None else None)

    with tarfile.open(bundle) as src, tarfile.open(dest, "w") as out:
        for member in src.getmembers():
            if member.name == "SHA256SUMS":
                for name, content in extra:
                    added = tarfile.TarInfo(name)
                    if isinstance(content, str):
                        added.type, added.linkname = tarfile.SYMTYPE, content
                    add(out, added, content if isinstance(content, bytes) else None)
                lines = "".join(f"{digest}  {name}\n" for name, digest in sums.items())
                add(out, member, lines.encode())
                continue
            source = src.extractfile(member) if member.isreg() else None
            data = source.read() if source is not None else None
            if member.name == "bundle.json":
                fields = json.loads(data or b"{}")
                fields.update(info or {})
                links = [(name, content) for name, content in extra if isinstance(content, str)]
                fields["links"].update(dict(links))
                data = json.dumps(fields).encode()
            add(out, member, data)
    return dest


def _refused_safely(archive: Path, tmp_path: Path) -> str:
    """The import of ``archive`` is refused and changes nothing anywhere under ``tmp_path``: not the
    target cache (which already holds a hub model folder), not a sentinel folder beside it."""
    cache = tmp_path / "second"
    (cache / "huggingface" / "models--other--kept").mkdir(parents=True, exist_ok=True)
    (cache / "huggingface" / "models--other--kept" / "keep").write_text("kept")
    (tmp_path / "victim").mkdir(exist_ok=True)
    (tmp_path / "victim" / "keep").write_text("kept")
    before = files_under(tmp_path)
    result = nimctl("bundle", "import", str(archive), "--cache", str(cache))
    assert result.exit_code == EXIT_INTEGRITY, result.stderr
    assert "Traceback" not in result.stderr
    assert files_under(tmp_path) == before  # nothing written, moved or deleted, no scratch left
    return error_line(result)


@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        # Each link resolves inside as text; the second is written through the first, and the
        # file through both would land in the cache's root.
        (
            [
                (f"{MODEL_DIR}/a/b/c/l1", "../../.."),
                (f"{MODEL_DIR}/a/b/c/l1/a/b/c/l2", "../../../../../../.."),
                (f"{MODEL_DIR}/a/b/c/l1/a/b/c/l2/ESCAPED", b"escaped"),
            ],
            f"member {MODEL_DIR}/a/b/c/l1/a/b/c/l2 lies below the symlink {MODEL_DIR}/a/b/c/l1",
        ),
        # Inside as text (l1/.. cancels out), outside once l1 is followed.
        (
            [(f"{MODEL_DIR}/a/b/l1", "../.."), (f"{MODEL_DIR}/a/b/l3", "l1/../../x")],
            f"member {MODEL_DIR}/a/b/l3 links to 'l1/../../x', outside the model's folder",
        ),
        # Inside when made (x did not exist yet); outside once the later link x exists.
        (
            [(f"{MODEL_DIR}/a/A", "x/../.."), (f"{MODEL_DIR}/a/x", ".")],
            f"member {MODEL_DIR}/a/A links to 'x/../..', outside the model's folder",
        ),
    ],
    ids=["written-through-a-link", "link-through-a-link", "link-changed-by-a-later-link"],
)
def test_chained_symlinks_never_lead_outside(
    bundle: Path, tmp_path: Path, extra: list[tuple[str, str | bytes]], refused: str
) -> None:
    line = _refused_safely(_forge(bundle, tmp_path / "evil.tar", extra=extra), tmp_path)
    assert refused in line and "refused" in line, line
    assert not list(tmp_path.rglob("ESCAPED"))


@pytest.mark.parametrize(
    ("fields", "refused"),
    [
        ({"commit": "VICTIM"}, "commit 'VICTIM' is not a 40-hex commit"),
        ({"commit": "0" * 40}, f"its commit {'0' * 40} has no snapshot in the archive"),
        ({"kind": "builtin", "folder": "huggingface"}, "built-in model name 'nimctl-test/tiny-vlm'"),
        (
            {"kind": "builtin", "name": "tiny-vlm", "model": "builtin://tiny-vlm", "folder": "huggingface"},
            "folder 'huggingface' is not builtin://tiny-vlm's folder in a cache (builtin/tiny-vlm)",
        ),
        ({"kind": "local"}, "kind 'local' is neither hf nor builtin"),
        ({"folder": "huggingface"}, "folder 'huggingface' is not hf://nimctl-test/tiny-vlm's folder"),
        ({"repo": "other/kept"}, "model 'hf://nimctl-test/tiny-vlm' is not hf://other/kept"),
        ({"repo": "../x"}, "repo '../x' is not a hub repository ORG/NAME"),
        (
            {"model": "hf://nimctl-test/tiny-vlm@main; rm -rf ~"},
            "is not hf://nimctl-test/tiny-vlm[@REVISION]",
        ),
        ({"refs": ["../../../victim/keep"]}, "are not plain ref names"),
        ({"refs": ["main", "v1"]}, "the refs in the archive do not match bundle.json's refs"),
        ({"manifest": "../../victim/keep"}, "manifest '../../victim/keep' is not a bare NAME.yaml"),
        ({"manifest": "tiny-vlm-hub.yml"}, "is not a bare NAME.yaml"),
    ],
)
def test_bundle_json_names_only_the_models_own_paths(
    bundle: Path, tmp_path: Path, fields: dict[str, object], refused: str
) -> None:
    if fields.get("commit") == "VICTIM":  # an absolute path: once moved into scratch and deleted
        fields = {"commit": str(tmp_path / "victim")}
        refused = f"commit {str(tmp_path / 'victim')!r} is not a 40-hex commit"
    line = _refused_safely(_forge(bundle, tmp_path / "evil.tar", info=fields), tmp_path)
    assert refused in line and "bundle.json" in line, line


def test_a_ref_must_name_the_imported_commit(bundle: Path, tmp_path: Path) -> None:
    extra: list[tuple[str, str | bytes]] = [(f"{MODEL_DIR}/refs/v1", b"0" * 40)]
    forged = _forge(bundle, tmp_path / "evil.tar", info={"refs": ["main", "v1"]}, extra=extra)
    line = _refused_safely(forged, tmp_path)
    assert f"member {MODEL_DIR}/refs/v1 does not name the commit" in line, line


def test_the_scratch_folder_names_the_importing_process(bundle: Path, tmp_path: Path) -> None:
    from nimctl.store.bundle import import_bundle

    cache = tmp_path / "second"
    seen: set[str] = set()

    def look(label: str, done: int, total: int | None) -> None:
        seen.update(p.name for p in cache.iterdir() if p.name.startswith(layout.IMPORT_PREFIX))

    import_bundle(bundle, cache, load_image=False, on_progress=look)
    assert seen and all(name.startswith(f"{layout.IMPORT_PREFIX}{os.getpid()}-") for name in seen), seen
    assert not [p for p in cache.iterdir() if p.name.startswith(layout.IMPORT_PREFIX)]


def test_export_needs_no_profile_that_runs_here(
    host_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 7B model on a machine without a GPU: only the missing files stop the export, not the profile."""
    from nimctl.profiles import selection

    def no_selection(*args: object, **kwargs: object) -> None:
        raise AssertionError("bundle export selected a profile")

    monkeypatch.setattr(selection, "select_profile", no_selection)
    monkeypatch.setenv("NIMCTL_ASSUME_GPUS", "none")
    archive = tmp_path / "qwen.tar"
    result = nimctl("bundle", "export", "qwen2.5-vl-7b-instruct", "-o", str(archive), "--no-image")
    assert result.exit_code == EXIT_MODEL_UNAVAILABLE, result.stderr
    assert "not in the cache" in error_line(result), result.stderr
    assert list(tmp_path.glob("qwen.tar*")) == []


def test_the_store_leaves_the_image_choice_to_the_cli() -> None:
    """The store sits below the runtime's planning (which imports it): the CLI picks the image."""
    import ast

    from nimctl import store

    for path in Path(store.__file__).parent.glob("*bundle*.py"):
        tree = ast.parse(path.read_text())
        imported = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
            alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        }
        assert not [name for name in imported if name.startswith("nimctl.runtime.planning")], path
