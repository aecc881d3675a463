"""Where the model cache keeps what: one function per folder, for the host and the container.

The cache is the folder ``nimctl run`` mounts at :data:`nimctl.contract.CONTAINER_CACHE` and
``nim-serve`` reads as ``NIM_CACHE_PATH``: ``nimctl pull``, ``nimctl cache``, the bundles and
the server's own start-up download all find a model through these functions.

- ``huggingface/``: huggingface_hub's own cache layout (``models--ORG--NAME/`` with ``blobs/``,
  ``refs/``, ``snapshots/COMMIT/`` and ``trees/COMMIT.json``, the file list with the hashes
  the hub recorded), so a cache filled by ``hf download --cache-dir`` works too.
- ``builtin/NAME/``: the built-in models nimctl generates.
- ``manifests/``: the manifests that came with imported bundles.
- ``loras/MODEL-loras/``: the demo LoRA adapters nimctl generates for a built-in model
  (``nimctl lora demo``); not models, so the cache's inventory leaves them out.
"""

from __future__ import annotations

from pathlib import Path

# A model being removed is first renamed to this prefix, so that an interrupted `rm` never
# leaves a half-deleted model in place for `run` to serve; `prune` finishes the job.
TRASH_PREFIX = ".nimctl-trash-"


# An import stages its files here (inside the cache: same filesystem, so moving them in is a
# rename); an import killed outright leaves one, which `prune` removes.
IMPORT_PREFIX = ".nimctl-import-"


def manifests_dir(cache: Path) -> Path:
    """Where ``nimctl bundle import`` puts a bundle's manifest; the cache's inventory reads it too."""
    return cache / "manifests"


def hub_dir(cache: Path) -> Path:
    """huggingface_hub's ``cache_dir`` inside the model cache."""
    return cache / "huggingface"


def builtin_dir(cache: Path) -> Path:
    return cache / "builtin"


def demo_loras_dir(cache: Path) -> Path:
    """Where ``nimctl lora demo`` generates the demo adapters (next to ``builtin/``, not in it)."""
    return cache / "loras"


def repo_dir(cache: Path, repo: str) -> Path:
    """The folder of one hub model repository, ``models--ORG--NAME`` (huggingface_hub's name)."""
    from huggingface_hub.file_download import repo_folder_name

    return hub_dir(cache) / repo_folder_name(repo_id=repo, repo_type="model")


def snapshot_dir(cache: Path, repo: str, commit: str) -> Path:
    """One commit's files, as links into ``blobs/``: the folder the server and the engine read."""
    return repo_dir(cache, repo) / "snapshots" / commit


def tree_file(cache: Path, repo: str, commit: str) -> Path:
    """The file list huggingface_hub wrote for ``commit``: sizes, git blob ids, LFS sha256."""
    return repo_dir(cache, repo) / "trees" / f"{commit}.json"
