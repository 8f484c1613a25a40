"""Import sources read member by member: a folder, a zip, a tar(.gz/.bz2/.xz) or uploads.

Nothing is ever extracted: every member is read into memory (under hard caps) and
handed to the decoder as bytes, so a hostile archive cannot write anywhere. Members
whose *path* or *type* is dangerous (`../`, absolute, drive letters, links, devices,
FIFOs) or that break a size / count / compression-ratio cap come out as
`Member(reason="unsafe")`; hidden files and `__MACOSX` are skipped without a trace.
"""

from __future__ import annotations

import lzma
import os
import re
import stat
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import DatasetError
from ..settings import Settings, get_settings

# Below this many uncompressed bytes the compression ratio is not checked: a small
# member cannot hurt (it is under the member cap anyway) and flat images compress well.
RATIO_FLOOR = 1024 * 1024
_CHUNK = 1024 * 1024
# OS clutter that is never counted or reported.
_JUNK = {"__MACOSX", "Thumbs.db", "desktop.ini"}
# Files at the root of a source that describe it rather than hold images (our export).
_ROOT_METADATA = {"manifest.json"}
_DRIVE = re.compile(r"^[A-Za-z]:")
# C0 and C1 control characters, DEL, and the line / paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Bidirectional embeddings, overrides and isolates: they make a name display as another
# ("Trojan Source"), e.g. "cat\u202egnp.exe" shows as "catexe.png".
_BIDI = re.compile(r"[\u202a-\u202e\u2066-\u2069]")
# A path component longer than this cannot be a file name on common filesystems; a whole
# path longer than MAX_PATH_CHARS does not fit the store's columns.
MAX_COMPONENT_BYTES = 255
MAX_PATH_CHARS = 1024
SHOWN_NAME_CHARS = 200  # a refused name is shown cut to this many characters


@dataclass(frozen=True)
class Limits:
    max_member_bytes: int
    max_archive_bytes: int
    max_members: int
    max_compression_ratio: float

    @classmethod
    def from_settings(cls, s: Settings) -> Limits:
        return cls(s.max_member_bytes, s.max_archive_bytes, s.max_members,
                   s.max_compression_ratio)


@dataclass(frozen=True)
class Member:
    """One file of a source. `data` is set only when `reason` is None."""

    name: str  # printable path inside the source, e.g. "emoji/noto/1f600.png"
    parts: tuple[str, ...] | None  # normalised path components; None when the path is unsafe
    data: bytes | None = None
    reason: str | None = None  # "unsafe" | "unsupported" | "corrupt"
    detail: str = ""


class _Unsafe(Exception):
    """A member broke a cap while being read (declared sizes can lie)."""


def printable(name: str) -> str:
    """A name safe for JSON and SQLite: undecodable bytes become U+FFFD."""
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no byte string produced
        raw = name.encode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


def name_problem(name: str) -> str:
    """Why a (printable) name may not be used, or "": control characters (NUL included) and
    bidirectional controls are refused rather than silently changed."""
    if m := _CONTROL.search(name):
        return f"control character U+{ord(m.group()):04X} in the name"
    if m := _BIDI.search(name):
        return (f"bidirectional text control U+{ord(m.group()):04X} in the name (it can "
                "disguise the name)")
    return ""


def shown_name(raw: str) -> str:
    """A name as reports and messages show it: printable, control and bidirectional
    characters written as escapes, cut to SHOWN_NAME_CHARS characters."""
    name = printable(raw)
    n = len(name)
    name = _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", name)
    name = _BIDI.sub(lambda m: f"\\u{ord(m.group()):04x}", name)
    if len(name) > SHOWN_NAME_CHARS:
        name = f"{name[:SHOWN_NAME_CHARS]}… ({n} characters)"
    return name


def split_member_path(raw: str) -> tuple[tuple[str, ...] | None, str]:
    """(components, "") for a safe relative path, else (None, why it is unsafe)."""
    name = printable(raw)
    problem = name_problem(name)
    if problem:
        return None, problem
    if len(name) > MAX_PATH_CHARS:
        return None, f"path longer than {MAX_PATH_CHARS} characters ({len(name)})"
    name = name.replace("\\", "/")  # zips made on Windows use backslashes
    if name.startswith("/"):
        return None, "absolute path"
    if _DRIVE.match(name):
        return None, "drive-letter path"
    parts = [unicodedata.normalize("NFC", p) for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None, "path escapes the source (..)"
    for p in parts:
        if len(p.encode("utf-8")) > MAX_COMPONENT_BYTES:
            return None, (f"a name of {len(p)} characters ({len(p.encode('utf-8'))} bytes; "
                          f"at most {MAX_COMPONENT_BYTES} bytes per folder or file name)")
    return tuple(parts), ""


def describe(path: Path) -> str:
    """How a source is named in manifests and messages: relative to the storage root when it
    lies inside it (an upload, the server inbox: server paths stay on the server), else the
    absolute path the user gave (a folder or archive of their own, on the command line)."""
    return get_settings().to_stored(Path(path).resolve())


def is_skipped(parts: tuple[str, ...]) -> bool:
    """Hidden files, OS clutter and our own export metadata: skipped, not counted."""
    if not parts:
        return True
    if any(p.startswith(".") or p in _JUNK for p in parts):
        return True
    return len(parts) == 1 and parts[0] in _ROOT_METADATA


def read_capped(f: BinaryIO, limit: int, *, compressed_pos: Callable[[], int] | None = None,
                ratio: float = 0.0) -> bytes:
    """Read `f` to EOF but never more than `limit` bytes (raise _Unsafe past it).

    `compressed_pos()` (optional) reports how many compressed bytes the reader has
    consumed so far; the ratio out/in is then checked while reading, so a bomb is
    stopped after about RATIO_FLOOR bytes instead of after its declared size.
    """
    start = compressed_pos() if compressed_pos else 0
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = f.read(min(_CHUNK, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise _Unsafe(f"member is larger than {limit} bytes")
        if compressed_pos and total >= RATIO_FLOOR:
            used = max(1, compressed_pos() - start)
            if total / used > ratio:
                raise _Unsafe(f"compression ratio above {ratio:g} while reading")
    return b"".join(chunks)


class Source:
    """Iterate `Member`s; `total` is the member count when known up front (for progress)."""

    description: str = ""
    total: int | None = None

    def __iter__(self) -> Iterator[Member]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Budget:
    """Member count and total-bytes caps shared by all archive-like sources."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.members = 0
        self.bytes = 0  # bytes read, or decompressed through to skip a member

    def count(self) -> str:
        """Count one member; '' while under the member cap, else why not."""
        self.members += 1
        if self.members > self.limits.max_members:
            return f"more than {self.limits.max_members} members in the source"
        return ""

    def check_size(self, declared: int) -> str:
        lim = self.limits
        if declared > lim.max_member_bytes:
            return f"declares {declared} bytes (cap {lim.max_member_bytes})"
        if self.bytes + declared > lim.max_archive_bytes:
            return f"source exceeds {lim.max_archive_bytes} bytes in total"
        return ""


class FolderSource(Source):
    """A directory tree. Symlinks are followed only while they stay inside the root."""

    def __init__(self, root: Path, limits: Limits):
        self.root = root.resolve()
        self.limits = limits
        self.description = describe(self.root)
        # (parts, path to read or None, reason, detail); walking first gives a total
        self._entries = list(self._walk(self.root, (), {str(self.root)}))
        self.total = len(self._entries)

    def _walk(self, directory: Path, prefix: tuple[str, ...], seen: set[str]):
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as e:
            yield prefix, None, "corrupt", f"cannot list folder: {e.strerror}"
            return
        for e in entries:
            name = unicodedata.normalize("NFC", printable(e.name))
            parts = (*prefix, name)
            if is_skipped(parts):
                continue
            problem = name_problem(name)
            if not problem and len("/".join(parts)) > MAX_PATH_CHARS:
                problem = f"path longer than {MAX_PATH_CHARS} characters"
            if problem:
                yield parts, None, "unsafe", problem
            elif e.is_symlink():
                target = Path(os.path.realpath(e.path))
                if not target.is_relative_to(self.root):
                    yield parts, None, "unsafe", "symlink points outside the source"
                elif target.is_dir():
                    if str(target) not in seen:  # a link back up would loop forever
                        seen.add(str(target))
                        yield from self._walk(target, parts, seen)
                elif target.is_file():
                    yield parts, target, None, ""
                elif target.exists():
                    yield parts, None, "unsafe", "symlink to a special file"
                else:
                    yield parts, None, "corrupt", "broken symlink"
            elif e.is_dir(follow_symlinks=False):
                yield from self._walk(Path(e.path), parts, seen)
            elif e.is_file(follow_symlinks=False):
                yield parts, Path(e.path), None, ""
            else:
                yield parts, None, "unsafe", "special file (device, FIFO or socket)"

    def __iter__(self) -> Iterator[Member]:
        cap = self.limits.max_member_bytes
        for parts, path, reason, detail in self._entries:
            name = "/".join(parts)
            if reason is not None:
                yield Member(shown_name(name), parts, reason=reason, detail=detail)
                continue
            try:
                st = os.stat(path)
                if not stat.S_ISREG(st.st_mode):  # replaced since the walk
                    raise _Unsafe("not a regular file")
                if st.st_size > cap:
                    raise _Unsafe(f"file has {st.st_size} bytes (cap {cap})")
                with open(path, "rb") as f:
                    data = read_capped(f, cap)
            except _Unsafe as err:
                yield Member(name, parts, reason="unsafe", detail=str(err))
            except OSError as err:
                yield Member(name, parts, reason="corrupt", detail=f"cannot read: {err.strerror}")
            else:
                yield Member(name, parts, data=data)


class ZipSource(Source):
    def __init__(self, path: Path, limits: Limits):
        self.limits = limits
        self.description = describe(path)
        try:
            self._zf = zipfile.ZipFile(path)
            self._infos = self._zf.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise DatasetError(f"cannot read zip archive {self.description}: {e}", code="bad_archive") from None
        self._overlapping = self._find_overlaps()
        self.total = sum(not i.is_dir() for i in self._infos)

    def _find_overlaps(self) -> set[int]:
        """Entries whose data overlaps the next local header: the quoted-overlap bomb."""
        bad: set[int] = set()
        ordered = sorted(self._infos, key=lambda i: i.header_offset)
        for a, b in zip(ordered, ordered[1:], strict=False):
            if a.header_offset + a.compress_size > b.header_offset:
                bad.add(id(b))
        return bad

    def close(self) -> None:
        self._zf.close()

    def _check_entry(self, info: zipfile.ZipInfo) -> tuple[str, str]:
        mode = info.external_attr >> 16  # Unix st_mode, when the creator recorded one
        if stat.S_ISLNK(mode):
            return "unsafe", "symlink"
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
            return "unsafe", "special file (device, FIFO or socket)"
        if id(info) in self._overlapping:
            return "unsafe", "member data overlaps another member"
        if info.flag_bits & 0x1:
            return "unsupported", "encrypted member"
        ratio = self.limits.max_compression_ratio
        if info.file_size >= RATIO_FLOOR and info.file_size > ratio * max(1, info.compress_size):
            return "unsafe", f"compression ratio {info.file_size / max(1, info.compress_size):.0f} (cap {ratio:g})"
        return "", ""

    def __iter__(self) -> Iterator[Member]:
        budget = _Budget(self.limits)
        for info in self._infos:
            if info.is_dir() or stat.S_ISDIR(info.external_attr >> 16):
                continue
            # zipfile cuts a name at its first NUL; the name as stored is checked.
            parts, problem = split_member_path(info.orig_filename)
            name = shown_name(info.orig_filename) if parts is None else "/".join(parts)
            if parts is None:
                budget.count()
                yield Member(name, None, reason="unsafe", detail=problem)
                continue
            if is_skipped(parts):
                continue
            why = budget.count() or budget.check_size(info.file_size)
            reason, detail = ("unsafe", why) if why else self._check_entry(info)
            if reason:
                yield Member(name, parts, reason=reason, detail=detail)
                continue
            try:
                with self._zf.open(info) as f:
                    # zipfile stops at the declared size and then checks the CRC, so a
                    # header that under-declares fails here instead of overflowing.
                    data = read_capped(f, info.file_size)
            except _Unsafe as err:
                yield Member(name, parts, reason="unsafe", detail=str(err))
                continue
            except NotImplementedError as err:
                yield Member(name, parts, reason="unsupported", detail=str(err))
                continue
            except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError,
                    ValueError, RuntimeError) as err:
                yield Member(name, parts, reason="unsafe", detail=f"member does not match its header: {err}")
                continue
            budget.bytes += len(data)
            yield Member(name, parts, data=data)


class TarSource(Source):
    """Plain or compressed tar, read as a stream in one pass (no seeking back)."""

    def __init__(self, path: Path, limits: Limits):
        self.limits = limits
        self.description = describe(path)
        self._raw = open(path, "rb")  # noqa: SIM115 - closed in close()
        try:
            self._tf = tarfile.open(fileobj=self._raw, mode="r|*")
        except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as e:
            self._raw.close()
            raise DatasetError(f"cannot read tar archive {self.description}: {e}", code="bad_archive") from None

    def close(self) -> None:
        self._tf.close()
        self._raw.close()

    def __iter__(self) -> Iterator[Member]:
        budget = _Budget(self.limits)
        n = 0
        try:
            while (ti := self._tf.next()) is not None:
                n += 1
                yield from self._member(ti, budget)
                if budget.bytes > self.limits.max_archive_bytes:
                    yield Member(self.description, None, reason="unsafe",
                                 detail=f"archive exceeds {self.limits.max_archive_bytes} bytes; rest not read")
                    return
        except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as e:
            raise DatasetError(f"tar archive is truncated or corrupt after {n} members: {e}",
                               code="bad_archive") from None

    def _member(self, ti: tarfile.TarInfo, budget: _Budget) -> Iterator[Member]:
        if ti.isdir():
            return
        parts, problem = split_member_path(ti.name)
        name = shown_name(ti.name) if parts is None else "/".join(parts)
        if parts is not None and is_skipped(parts):
            budget.bytes += ti.size  # skipping still means decompressing through it
            return
        if parts is None:
            reason, detail = "unsafe", problem
        elif ti.issym() or ti.islnk():
            kind = "symlink" if ti.issym() else "hard link"
            reason, detail = "unsafe", f"{kind} to {shown_name(ti.linkname)}"
        elif ti.ischr() or ti.isblk() or ti.isfifo():
            reason, detail = "unsafe", "device or FIFO member"
        elif ti.issparse() or not ti.isreg():  # sparse members expand beyond their data
            reason, detail = "unsafe", "unsupported member type"
        else:
            reason, detail = "", ""
        why = budget.count() or (budget.check_size(ti.size) if not reason else "")
        if why:
            reason, detail = "unsafe", why
        if reason:
            budget.bytes += ti.size if ti.isreg() else 0  # the stream decompresses through it
            yield Member(name, parts, reason=reason, detail=detail)
            return
        f = self._tf.extractfile(ti)
        try:
            # raw.tell() = compressed bytes consumed, so the ratio is checked on real data
            data = read_capped(f, min(ti.size, self.limits.max_member_bytes),
                               compressed_pos=self._raw.tell,
                               ratio=self.limits.max_compression_ratio)
        except _Unsafe as err:
            budget.bytes += ti.size
            yield Member(name, parts, reason="unsafe", detail=str(err))
            return
        budget.bytes += len(data)
        yield Member(name, parts, data=data)


class UploadSource(Source):
    """(relative path, bytes) pairs, e.g. the files of an HTTP folder upload."""

    def __init__(self, items: Sequence[tuple[str, bytes]], limits: Limits):
        self._items = items
        self.limits = limits
        self.description = f"upload ({len(items)} files)"
        self.total = len(items)

    def __iter__(self) -> Iterator[Member]:
        budget = _Budget(self.limits)
        for raw_name, data in self._items:
            parts, problem = split_member_path(str(raw_name))
            name = shown_name(str(raw_name)) if parts is None else "/".join(parts)
            if parts is None:
                budget.count()
                yield Member(name, None, reason="unsafe", detail=problem)
                continue
            if is_skipped(parts):
                continue
            why = budget.count() or budget.check_size(len(data))
            if why:
                yield Member(name, parts, reason="unsafe", detail=why)
                continue
            budget.bytes += len(data)
            yield Member(name, parts, data=bytes(data))


def sniff_archive(path: Path) -> str | None:
    """"zip", "tar" or None, from magic bytes (the extension is only a hint)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise DatasetError(f"cannot read {describe(path)}: {e.strerror}", code="bad_source") from None
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        return "tar"  # a compressed stream: TarSource checks a tar is inside
    if head[257:262] == b"ustar":
        return "tar"
    if zipfile.is_zipfile(path):  # e.g. data prepended to a zip
        return "zip"
    try:
        if len(head) >= 512 and tarfile.is_tarfile(path):  # old v7 tars lack "ustar"
            return "tar"
    except OSError:
        pass
    return None


def open_source(src: str | os.PathLike | Sequence[tuple[str, bytes]], limits: Limits) -> Source:
    """The right reader for a folder, a zip / tar file (sniffed) or uploaded files."""
    if not isinstance(src, (str, os.PathLike)):
        return UploadSource(list(src), limits)
    if "\x00" in str(src):
        raise DatasetError("source path contains a NUL byte", code="bad_source")
    path = Path(src).expanduser()
    if not path.exists():
        raise DatasetError(f"source not found: {describe(path)}", code="bad_source")
    if path.is_dir():
        return FolderSource(path, limits)
    kind = sniff_archive(path) if path.is_file() else None
    if kind == "zip":
        return ZipSource(path, limits)
    if kind == "tar":
        return TarSource(path, limits)
    raise DatasetError(f"unsupported source {describe(path)}: expected a folder, a .zip or a .tar/.tar.gz/.tgz",
                       code="bad_source")
