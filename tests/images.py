"""Small images made on the fly for image-input tests."""

from __future__ import annotations

import base64
import io

from PIL import Image


def png_bytes(size: tuple[int, int] = (64, 48), colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def png_data_url(size: tuple[int, int] = (64, 48)) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(size)).decode()


def image_question(text: str = "What is this?") -> list[dict[str, object]]:
    """One user message asking ``text`` about a small PNG, as the openai client sends it."""
    parts = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": png_data_url()}}]
    return [{"role": "user", "content": parts}]
