"""Images for chat: a local file becomes a ``data:`` URL; a web or data URL passes through.

Everything that can be checked here is checked before a request is sent: the file exists,
its size is within the limit, and its bytes are an image type the engine decodes. The type
comes from the file's first bytes (:func:`nimctl.media.sniff_media_type`), not its name, so a
mislabelled file is still sent right.
"""

from __future__ import annotations

import base64
from pathlib import Path

from nimctl.errors import UsageError
from nimctl.media import sniff_media_type

# OpenAI's own per-image limit; far above what a small VLM needs, well below what hurts.
DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024


def image_to_url(ref: str, *, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> str:
    """The URL to put in an ``image_url`` content part for a path or URL given by a user."""
    if ref.startswith(("http://", "https://")):
        return ref
    if ref.startswith("data:"):
        if not ref.startswith("data:image/") or ";base64," not in ref:
            raise UsageError(
                "an image data: URL must look like data:image/png;base64,...",
                hint="or pass the image file's path",
            )
        return ref
    path = Path(ref).expanduser()
    if not path.exists():
        raise UsageError(f"image not found: {ref}", hint="pass an existing image file, or an http(s) URL")
    if not path.is_file():
        raise UsageError(f"not a file: {ref}", hint="pass an image file, not a directory")
    size = path.stat().st_size
    if size > max_bytes:
        raise UsageError(
            f"image {ref} is {_mib(size)}, over the {_mib(max_bytes)} limit",
            hint="send a smaller or downscaled image",
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read image {ref}: {exc.strerror or exc}") from None
    media_type = sniff_media_type(data)
    if media_type is None:
        raise UsageError(
            f"{ref} is not an image type the server can read",
            hint="use PNG, JPEG, GIF, WebP or BMP",
        )
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def user_message(text: str, image_urls: list[str]) -> dict[str, object]:
    """An OpenAI user message: plain text, or text and ``image_url`` parts when there are images."""
    if not image_urls:
        return {"role": "user", "content": text}
    parts: list[dict[str, object]] = [{"type": "image_url", "image_url": {"url": url}} for url in image_urls]
    if text:
        parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"
