"""Which image type a file's bytes hold: the one sniffer the client and the server share.

The client checks a user's image file with it before sending; the server checks inline
``data:`` images with it. It sits below both so that neither imports the other, and its
imports stay the standard library's alone: the server pays nothing for the client's.
"""

from __future__ import annotations

# Prefix signatures; WebP (RIFF....WEBP) and BMP (a known DIB header size) need more than a prefix.
SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
SUPPORTED_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp")
SNIFF_BYTES = 32  # more than any check below reads
# The DIB header sizes Pillow (what vLLM decodes with) reads: core, info, v2, v3, OS/2 v2, v4, v5.
_BMP_DIB_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})


def sniff_media_type(data: bytes) -> str | None:
    """The image media type of ``data`` (a whole file or its first :data:`SNIFF_BYTES` bytes),
    or None when it is not one of :data:`SUPPORTED_TYPES`."""
    head = bytes(data[:SNIFF_BYTES])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if (
        head[:2] == b"BM"
        and len(head) >= 18
        and int.from_bytes(head[14:18], "little") in _BMP_DIB_HEADER_SIZES
    ):
        return "image/bmp"
    for signature, media_type in SIGNATURES:
        if head.startswith(signature):
            return media_type
    return None
