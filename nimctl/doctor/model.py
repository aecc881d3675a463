"""The model's side: a runnable profile (and why it was chosen), and the credentials its source
needs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nimctl.doctor.report import Check, Verdict

if TYPE_CHECKING:
    from nimctl.doctor.probes import Probes
    from nimctl.doctor.target import Target

NO_MODEL = "no MODEL given: nimctl doctor MODEL checks one"


def profile_check(target: Target) -> Check:
    title = "runnable profile"
    if target.request.model is None:
        return Check("profile", title, Verdict.skip, NO_MODEL)
    data = {"system": target.inventory.describe(), "assumed": target.inventory.source == "assumed"}
    if target.problem is not None:
        return Check(
            "profile",
            title,
            Verdict.fail,
            f"{target.problem.message} ({target.inventory.describe()})",
            hint=target.problem.hint or "nimctl profiles list MODEL shows why each profile cannot run",
            data=data,
        )
    spec = target.spec
    assert spec is not None
    data |= {"profile_id": spec.profile_id, "profile_name": spec.profile_name, "reason": spec.selection}
    if spec.profile_id is None:
        return Check("profile", title, Verdict.ok, spec.selection, data=data)
    return Check(
        "profile",
        title,
        Verdict.ok,
        f"{spec.selection} [{spec.profile_id[:12]}]",
        data=data,
    )


def _hf_token(probes: Probes) -> str | None:
    """Where huggingface_hub would find a token: HF_TOKEN, HF_TOKEN_PATH, or the login file."""
    env = probes.environ
    if env.get("HF_TOKEN"):
        return "HF_TOKEN"
    for variable, path in (
        ("HF_TOKEN_PATH", env.get("HF_TOKEN_PATH")),
        (
            "huggingface-cli login",
            str(Path(env.get("HF_HOME") or Path.home() / ".cache/huggingface") / "token"),
        ),
    ):
        if path and Path(path).is_file() and Path(path).read_text(encoding="utf-8", errors="replace").strip():
            return f"{variable} ({path})"
    return None


def credentials_check(target: Target, probes: Probes) -> Check:
    title = "credentials"
    source = target.source
    if source is None:
        return Check("credentials", title, Verdict.skip, NO_MODEL)
    if source.kind in ("builtin", "local"):
        what = "a built-in model is generated here" if source.kind == "builtin" else "a local folder"
        return Check("credentials", title, Verdict.ok, f"{source.uri}: {what}, no credentials needed")
    from nimctl.doctor.host import model_bytes

    if target.offline:
        return Check(
            "credentials", title, Verdict.ok, "an offline run downloads nothing: no credentials needed"
        )
    cached, _ = model_bytes(target)
    if cached == 0:
        return Check("credentials", title, Verdict.ok, f"{source.uri} is in the cache: nothing to download")
    token = _hf_token(probes)
    if token is None and target.spec is not None and target.spec.env.get("HF_TOKEN"):
        token = "HF_TOKEN (-e)"
    data = {"source": source.uri, "token_from": token}
    if token:
        return Check("credentials", title, Verdict.ok, f"a hub token is set: {token}", data=data)
    return Check(
        "credentials",
        title,
        Verdict.warn,
        f"{source.uri} is not in the cache and no HF_TOKEN is set: enough for a public model, "
        "not for a gated or private one",
        hint="export HF_TOKEN=<a token of an account that accepted the model's terms> (it is passed to "
        "the instance, never shown)",
        data=data,
    )
