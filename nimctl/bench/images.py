"""The images of a VLM bench run (``--images K --image-size WxH``): PNG data URLs, a new one per request.

Every image is different: a server caches images by the hash of their pixels (vLLM's multimodal
processor and encoder caches), so an image sent twice would skip the work being measured. Image
``k`` of request ``i`` is random noise: one raster drawn per run from the run's seed, whose first
row is replaced with noise seeded with ``(seed, i, k)``. No two images share their pixels, a run can
be repeated exactly, and what a vision encoder costs does not depend on the pixels anyway.

The PNG is written here (8-bit RGB, in stored deflate blocks: noise would not compress at any
level) rather than with Pillow, and only its changing parts are encoded per image: the first row,
the zlib and PNG checksums; the rest of the base64 text is computed once. Measured on the 2-core
test machine, a 512x512 data URL (1 MB) costs ~0.5 ms this way, 3.7 ms built whole, ~20 ms with
Pillow: time that the generator's event loop pays per image while other requests stream. The request
body is then spliced around the URLs too (``Workload.encoded_body``), not run through ``json.dumps``
(2 ms more a 512x512 image). Against bench_generator.py's trivial server at concurrency 32 with 64
chunks a request, the generator sent ~150 requests/s with one 512x512 image each, below full use of
its core (~520 without images). No extra package is needed.
"""

from __future__ import annotations

import base64
import random
import struct
import zlib

MAX_SIDE = 8192
PREFIX = "data:image/png;base64,"
_PREFIX_BYTES = PREFIX.encode("ascii")
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
# The first pixel row starts after the signature, IHDR (25), IDAT's length and name (8), the zlib
# header (2) and the first stored block's header (5): offset 48, a multiple of 3, where base64 can split.
_ROW_AT = 48
_SPLICE_MIN_ROWS = 4  # smaller images are built whole (cheap, and their rows leave no fixed middle)


def png(width: int, height: int, scanlines: bytes) -> bytes:
    """An RGB PNG of ``height`` scanlines, each a filter byte (0: none) and ``width * 3`` bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB, no interlace
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(scanlines, 0)) + _IEND


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


class ImageSource:
    """``urls(i)``: the ``count`` data URLs of request ``i``, each ``size`` (width, height) pixels."""

    def __init__(self, count: int, size: tuple[int, int], seed: int) -> None:
        self.count = count
        self.width, self.height = size
        self.seed = seed
        self._row = 1 + self.width * 3
        stride = self.width * 3
        pixels = random.Random(f"images:{seed}").randbytes(stride * self.height)
        self._scanlines = b"".join(
            b"\x00" + pixels[row * stride : (row + 1) * stride] for row in range(self.height)
        )
        self._splice = self.height >= _SPLICE_MIN_ROWS
        if self._splice:
            self._prepare(png(self.width, self.height, self._scanlines))

    def _prepare(self, base: bytes) -> None:
        """The fixed parts of every image's file and base64 text (see :meth:`url`)."""
        row_end = _ROW_AT + self._row
        adler_at = len(base) - len(_IEND) - 8  # the zlib checksum, then IDAT's CRC, then IEND
        head_end = row_end + 2  # 48 + 1 + 3w + 2: a multiple of 3
        tail_at = adler_at // 3 * 3
        self._head = base[:_ROW_AT]
        self._after_row = base[row_end:head_end]
        self._middle = base64.b64encode(base[head_end:tail_at])
        self._before_adler = base[tail_at:adler_at]
        self._crc_start = zlib.crc32(base[37:_ROW_AT])  # "IDAT", the zlib and block headers
        # Views, not copies: an 8192x8192 raster is 200 MB.
        self._crc_rest = memoryview(base)[row_end:adler_at]
        self._rest_lines = memoryview(self._scanlines)[self._row :]

    def _first_row(self, index: int, k: int) -> bytes:
        return b"\x00" + random.Random(f"{self.seed}:{index}:{k}").randbytes(self.width * 3)

    def png(self, index: int, k: int) -> bytes:
        """Image ``k`` of request ``index``, as PNG bytes, built whole (what :meth:`url` encodes)."""
        first = self._first_row(index, k)
        return png(self.width, self.height, first + self._scanlines[self._row :])

    def url(self, index: int, k: int) -> str:
        """``data:image/png;base64,...`` of :meth:`png`."""
        return self.url_bytes(index, k).decode("ascii")

    def url_bytes(self, index: int, k: int) -> bytes:
        """:meth:`url` as ASCII bytes (what a request body is made of), spliced from the parts that change."""
        if not self._splice:
            return _PREFIX_BYTES + base64.b64encode(self.png(index, k))
        first = self._first_row(index, k)
        adler = struct.pack(">I", zlib.adler32(self._rest_lines, zlib.adler32(first)))
        crc = zlib.crc32(adler, zlib.crc32(self._crc_rest, zlib.crc32(first, self._crc_start)))
        head = base64.b64encode(self._head + first + self._after_row)
        tail = base64.b64encode(self._before_adler + adler + struct.pack(">I", crc) + _IEND)
        return b"".join((_PREFIX_BYTES, head, self._middle, tail))

    def urls(self, index: int) -> list[str]:
        return [self.url(index, k) for k in range(self.count)]

    def urls_bytes(self, index: int) -> list[bytes]:
        return [self.url_bytes(index, k) for k in range(self.count)]
