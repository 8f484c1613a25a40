"""PNG chunk walking for the safe decoder (polychrome.imageio): structure and
CRC checks, and tEXt / zTXt / iTXt parsing, without decoding any pixel."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from polychrome.errors import ImageRejected

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
MAX_TEXT_BYTES = 1 << 20  # per text chunk after decompression: a zTXt can be a zip bomb


def iter_chunks(
    stream: BinaryIO, *, verify_all: bool, keep: tuple[bytes, ...] = ()
) -> Iterator[tuple[bytes, bytes | None]]:
    """Yield (type, data) for every chunk after the signature, through IEND.

    Only chunks whose type is in `keep` are read into memory (and always
    CRC-checked; text chunks are capped); data is None for the others, which
    are CRC-checked in 1 MiB blocks when verify_all, else skipped with a seek.
    So a chunk claiming 2 GiB never costs 2 GiB of memory."""
    stream.seek(len(PNG_SIGNATURE))
    first = True
    while True:
        header = stream.read(8)
        if len(header) < 8:
            raise ImageRejected("truncated PNG: no IEND chunk", code="corrupt")
        length, ctype = struct.unpack(">I4s", header)
        if length > 0x7FFFFFFF or not ctype.isalpha() or first != (ctype == b"IHDR"):
            raise ImageRejected(f"corrupt PNG chunk {ctype!r}", code="corrupt")
        first = False
        data: bytes | None = None
        crc = zlib.crc32(ctype)
        if ctype in keep:
            if length > MAX_TEXT_BYTES * 4 and ctype in TEXT_CHUNKS:
                raise ImageRejected("PNG text chunk too large", code="too_large")
            data = stream.read(length)
            if len(data) < length:
                raise ImageRejected(f"truncated PNG {ctype!r} chunk", code="corrupt")
            crc = zlib.crc32(data, crc)
        elif verify_all:
            left = length
            while left:
                block = stream.read(min(left, 1 << 20))
                if not block:
                    raise ImageRejected(f"truncated PNG {ctype!r} chunk", code="corrupt")
                crc, left = zlib.crc32(block, crc), left - len(block)
        else:
            stream.seek(length, io.SEEK_CUR)
        stored = stream.read(4)
        if len(stored) < 4:
            raise ImageRejected(f"truncated PNG {ctype!r} chunk", code="corrupt")
        if (verify_all or data is not None) and crc != struct.unpack(">I", stored)[0]:
            raise ImageRejected(f"bad CRC in PNG {ctype!r} chunk", code="corrupt")
        yield ctype, data
        if ctype == b"IEND":
            return


def _inflate(data: bytes) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(data, MAX_TEXT_BYTES)
    if d.unconsumed_tail:
        raise ImageRejected("PNG text chunk inflates too large", code="too_large")
    return out


def parse_text_chunk(ctype: bytes, data: bytes) -> tuple[str, str]:
    """(keyword, text) of a tEXt, zTXt or iTXt chunk; ValueError etc. if malformed."""
    key, sep, rest = data.partition(b"\x00")
    if not sep or not key:
        raise ValueError("missing keyword")
    if ctype == b"tEXt":
        return key.decode("latin-1"), rest.decode("latin-1")
    if ctype == b"zTXt":
        return key.decode("latin-1"), _inflate(rest[1:]).decode("latin-1")
    # iTXt: flag, method, language\0, translated keyword\0, text (UTF-8)
    flag = rest[0]
    _lang, _, rest2 = rest[2:].partition(b"\x00")
    _tkey, _, text = rest2.partition(b"\x00")
    return key.decode("latin-1"), (_inflate(text) if flag else text).decode("utf-8")
