"""Finding and loading manifests, with one-line errors that name the file, the place and the problem.

Search path (first hit wins): ``$NIMCTL_PROFILES_DIR`` (one or more folders separated by ``:``),
``/opt/nim/profiles`` (inside the container), the repository's ``profiles/`` folder (a source
checkout), and ``nimctl/data/profiles`` (the copy a wheel install ships).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nimctl import contract
from nimctl.errors import ManifestError, UsageError

if TYPE_CHECKING:
    import yaml

    from nimctl.profiles.schema import Manifest

CONTAINER_PROFILES_DIR = Path(contract.CONTAINER_PROFILES)
_PACKAGE_DIR = Path(__file__).resolve().parent.parent
REPO_PROFILES_DIR = _PACKAGE_DIR.parent / "profiles"
PACKAGED_PROFILES_DIR = _PACKAGE_DIR / "data" / "profiles"
_SUFFIXES = (".yaml", ".yml")


def search_path(profiles_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders searched for manifests, in order; only ``profiles_dir`` when it is given.

    ``profiles_dir`` may name several folders separated by ``:``, as ``NIMCTL_PROFILES_DIR`` does
    (``nimctl run manifest.yaml`` gives a container ``/opt/nim/user-profiles:/opt/nim/profiles``).
    """
    if profiles_dir is not None:
        return [Path(part) for part in str(profiles_dir).split(os.pathsep) if part and Path(part).is_dir()]
    dirs: list[Path] = []
    env = os.environ.get(contract.PROFILES_DIR, "")
    dirs.extend(Path(part) for part in env.split(os.pathsep) if part)
    dirs.extend([CONTAINER_PROFILES_DIR, REPO_PROFILES_DIR, PACKAGED_PROFILES_DIR])
    unique: list[Path] = []
    for folder in dirs:
        if folder.is_dir() and folder.resolve() not in {d.resolve() for d in unique}:
            unique.append(folder)
    return unique


def manifest_files(profiles_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Every manifest on the search path, one per file name (an earlier folder shadows a later one)."""
    found: dict[str, Path] = {}
    for folder in search_path(profiles_dir):
        for path in sorted(folder.iterdir()):
            if path.suffix in _SUFFIXES and path.is_file():
                found.setdefault(path.stem, path)
    return sorted(found.values(), key=lambda p: p.stem)


def find_manifest(ref: str, profiles_dir: str | os.PathLike[str] | None = None) -> Manifest:
    """The manifest for ``ref``: a manifest path, a model or manifest name, a model source URI, or
    a local model folder.

    Names match the file name, the model's ``name`` or ``served_name``, or the last part of its
    source (``Qwen2.5-VL-7B-Instruct`` finds ``hf://Qwen/Qwen2.5-VL-7B-Instruct``), ignoring case.
    A local model folder (``/models/Qwen2.5-VL-7B-Instruct``, as ``NIM_MODEL_PATH`` may be) is
    matched by its folder name the same way, else by the ``_name_or_path`` its config.json keeps.
    """
    ref = ref.strip()
    if not ref:
        raise UsageError("empty model or manifest name")
    as_path = Path(ref).expanduser()
    if ref.endswith(_SUFFIXES) or ("://" not in ref and as_path.is_file()):
        if not as_path.is_file():
            raise UsageError(f"manifest file not found: {ref}")
        return load_manifest(as_path)
    for path in manifest_files(profiles_dir):
        if path.stem == ref:
            return load_manifest(path)
    headers = [(path, _lookup_keys(model)) for path, model in _model_headers(profiles_dir)]
    for wanted in _wanted_names(ref, as_path):
        for path, keys in headers:
            if wanted in keys or ("://" not in wanted and wanted in _last_parts(keys)):
                return load_manifest(path)
    known = ", ".join(p.stem for p in manifest_files(profiles_dir)) or "none"
    where = ", ".join(str(d) for d in search_path(profiles_dir)) or "no folder found"
    raise UsageError(
        f"no manifest for {ref!r} (known models: {known})",
        hint=f"searched {where}; pass a manifest path, or set NIMCTL_PROFILES_DIR",
    )


def _lookup_keys(model: dict[str, Any]) -> set[str]:
    """What a reference is compared with, lower-cased: name, served name, source URI."""
    source = str(model.get("source", "")).rstrip("/").lower()
    return {str(model.get("name", "")).lower(), str(model.get("served_name", "")).lower(), source}


def _last_parts(keys: set[str]) -> set[str]:
    """The last part of the source URI (``qwen2.5-vl-7b-instruct``), for a reference without a scheme."""
    return {key.rsplit("/", 1)[-1] for key in keys if "://" in key}


def _wanted_names(ref: str, as_path: Path) -> Iterator[str]:
    """The names ``ref`` may be known by, most exact first."""
    wanted = ref.rstrip("/").lower()
    if wanted.startswith("hf://"):
        wanted = wanted.split("@", 1)[0]  # hf://org/name@revision: the revision does not change the model
    yield wanted
    if "://" in ref:
        return
    # A served name ("org/name") is not a folder unless it is one: only then its last part counts.
    if ref.startswith(("/", "./", "../", "~")) or as_path.is_dir():
        yield as_path.name.lower()
        name_or_path = _config_name(as_path)
        if name_or_path:
            yield name_or_path.rstrip("/").rsplit("/", 1)[-1].lower()


def _config_name(folder: Path) -> str | None:
    """``_name_or_path`` from a model folder's config.json (the repository it was saved from)."""
    import json

    try:
        value = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value.strip() else None


def _model_headers(profiles_dir: str | os.PathLike[str] | None) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The ``model:`` block of each manifest, read loosely: a broken file is skipped here."""
    import yaml

    for path in manifest_files(profiles_dir):
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_loader())
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and isinstance(data.get("model"), dict):
            yield path, data["model"]


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Parse and validate one manifest file; every failure is a one-line :class:`ManifestError`."""
    import yaml
    from pydantic import ValidationError

    from nimctl.profiles.schema import Manifest

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read: {exc}") from None
    try:
        root = yaml.compose(text, Loader=_loader())
        if root is not None:
            _refuse_duplicate_keys(path, root)
        data = yaml.load(text, Loader=_loader())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ManifestError(f"{path}{line}: YAML error: {problem}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: YAML error: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}:1: a manifest is a mapping with 'model' and 'profiles'")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(_describe(path, root, exc)) from None
    manifest._path = path
    manifest._text = text
    return manifest


def _loader() -> type[yaml.SafeLoader]:
    """libyaml's safe loader when PyYAML was built with it (several times faster), else the pure one."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _refuse_duplicate_keys(path: Path, node: yaml.Node) -> None:
    import yaml

    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    raise ManifestError(f"{path}:{key.start_mark.line + 1}: duplicate key {key.value!r}")
                seen.add(key.value)
            _refuse_duplicate_keys(path, value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicate_keys(path, item)


def _describe(path: Path, root: yaml.Node | None, exc: Any) -> str:
    """``file:line: field.path: problem`` for the first validation error."""
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    original = (error.get("ctx") or {}).get("error")
    loc = tuple(getattr(original, "loc", ())) or loc
    if getattr(original, "field", None):
        loc = (*loc, original.field)
    # pydantic puts the failing tag model's own path after "tags"; keep the user's field path.
    message = str(original) if original is not None else error["msg"]
    noun = "tag" if "tags" in loc[:-1] else "field"
    if error["type"] == "missing":
        message = f"missing {noun}"
    elif error["type"] == "extra_forbidden":
        message = f"unknown {noun}"
    elif error["type"] == "literal_error":
        message = f"{error.get('input')!r} is not allowed: {error['msg'].removeprefix('Input should be ')}"
    elif error["type"] == "string_pattern_mismatch":
        message = f"{error.get('input')!r} has the wrong form ({_pattern_hint(loc)})"
    elif error["type"] == "string_type":
        message = f"expected text, got {error.get('input')!r} (quote it)"
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    nested = getattr(original, "errors", None)
    if callable(nested):  # a tag failed its own model: point at the tag itself
        inner = nested()[0]
        loc = loc + tuple(inner["loc"])
        message = _describe_tag(inner)
    line = _line_of(root, loc)
    where = _format_loc(loc)
    return f"{path}{':' + str(line) if line else ''}: {where + ': ' if where else ''}{message}"


def _describe_tag(error: dict[str, Any]) -> str:
    if error["type"] == "missing":
        return "missing tag"
    if error["type"] == "extra_forbidden":
        return "unknown tag"
    if error["type"] == "literal_error":
        return f"{error.get('input')!r} is not allowed: {error['msg'].removeprefix('Input should be ')}"
    if error["type"] == "string_pattern_mismatch":
        return f"{error.get('input')!r} has the wrong form ({_pattern_hint(tuple(error['loc']))})"
    return error["msg"].removeprefix("Value error, ")


def _pattern_hint(loc: tuple[Any, ...]) -> str:
    field = str(loc[-1]) if loc else ""
    return {
        "id": "64 lower-case hex digits",
        "tp": "a positive whole number as a string",
        "pp": "a positive whole number as a string",
        "number_of_gpus": "a positive whole number as a string",
        "gpu_device": "PCI 'device:vendor' in lower-case hex, e.g. '2330:10de'",
        "source": "a URI such as hf://org/name or builtin://name",
        "name": "letters, digits, '.', '_' and '-'",
    }.get(field, "see the manifest format")


def _format_loc(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based YAML line of the deepest node on ``loc`` that exists."""
    import yaml

    node = root
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    child, line = value, key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line
