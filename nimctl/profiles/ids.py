"""Profile ids: the SHA-256 of the model name and the profile's tags, so equal tags give equal ids.

Run ``python -m nimctl.profiles.ids profiles/x.yaml`` to print the id each profile should carry.
The id does not cover the engine arguments: tuning them keeps the profile's identity.
"""

from __future__ import annotations

import hashlib
import json
import sys


def profile_id(model_name: str, tags: dict[str, str]) -> str:
    canonical = json.dumps({"model": model_name, "tags": dict(sorted(tags.items()))}, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def main(argv: list[str] | None = None) -> int:
    import yaml

    for path in argv if argv is not None else sys.argv[1:]:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
        for index, profile in enumerate(data.get("profiles") or []):
            tags = {str(k): str(v) for k, v in (profile.get("tags") or {}).items()}
            print(f"{path} profiles[{index}] {profile_id(data['model']['name'], tags)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
