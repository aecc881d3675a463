"""Which image type a file's bytes hold, and how many pixels its header declares: the one
sniffer the client and the server share.

The client checks a user's image file with it before sending; the server checks inline
``data:`` images with it, and refuses ones whose header declares more pixels than it allows
before the engine decodes them. It sits below both so that neither imports the other, and its
imports stay the standard library's alone: the server pays nothing for the client's (Pillow is
not a server dependency).
"""

from __future__ import annotations

import struct

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


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as the header of ``data`` declares them, the size Pillow would report on
    opening it; None when the type is not one of :data:`SUPPORTED_TYPES` or the header is cut short.

    Only headers are read (a few dozen bytes, JPEG's segment chain, GIF's extension blocks): the
    point is to refuse a decompression bomb without decoding it.
    """
    media_type = sniff_media_type(data)
    try:
        if media_type == "image/png":
            # IHDR is the first chunk: width and height, big-endian, right after its type.
            return struct.unpack_from(">II", data, 16) if data[12:16] == b"IHDR" else None
        if media_type == "image/jpeg":
            return _jpeg_size(data)
        if media_type == "image/gif":
            return _gif_size(data)
        if media_type == "image/webp":
            return _webp_size(data)
        if media_type == "image/bmp":
            return _bmp_size(data)
    except struct.error:  # the header ends before the field
        return None
    return None


# Start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the size.
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# Markers without a length field: TEM, RST0-7, SOI, EOI.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    offset = 2
    # Each step moves forward by at least one byte, so the walk ends within len(data) steps.
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in _JPEG_STANDALONE:
            offset += 2
            continue
        if marker in _JPEG_SOF:
            height, width = struct.unpack_from(">HH", data, offset + 5)
            return width, height
        offset += 2 + int.from_bytes(data[offset + 2 : offset + 4], "big")
    return None


def _gif_size(data: bytes) -> tuple[int, int] | None:
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    # Pillow grows the size to the first frame's extent when that frame lies outside the screen.
    offset = 13 + (3 << ((flags & 0x07) + 1) if flags & 0x80 else 0)
    while offset < len(data):
        block = data[offset]
        if block == 0x2C:  # image descriptor: left, top, width, height
            left, top, frame_width, frame_height = struct.unpack_from("<HHHH", data, offset + 1)
            return max(width, left + frame_width), max(height, top + frame_height)
        if block != 0x21:  # not an extension: no frame to read
            break
        offset += 2  # introducer and label, then sub-blocks up to a zero length
        while offset < len(data) and data[offset]:
            offset += data[offset] + 1
        offset += 1
    return width, height


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the key frame's start code
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: width-1 and height-1 in 14 bits each after the signature byte
        (bits,) = struct.unpack_from("<I", data, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: the canvas, width-1 and height-1 in 24 bits each
        if len(data) < 30:
            return None
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    (header_size,) = struct.unpack_from("<I", data, 14)
    if header_size == 12:  # OS/2 core header: 16-bit sizes
        return struct.unpack_from("<HH", data, 18)
    width, height = struct.unpack_from("<ii", data, 18)
    return abs(width), abs(height)  # a negative height means rows run top-down
