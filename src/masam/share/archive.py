"""The model archive: one zip file with a ``manifest.json`` that lists every other member with its
sha256 and size, and the reading side that refuses anything it cannot trust.

An archive is checked as a whole before any byte of it is used or written out: a known format and
format version, member names that stay inside the archive's folder (no absolute paths, no ``..``,
no links, no duplicates), only the kinds of file a model consists of (JSON, Markdown, PNG,
safetensors, text) and no pickle whatever its name, every member listed in the manifest and
every listed member present with the sha256 the manifest gives. Each refusal is one line naming
the archive and the member.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath

from ..errors import InputError
from ..fileio import atomic_path, current_umask

ARCHIVE_FORMAT = "masam-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# The kinds of member a model consists of; anything else (a pickle, code) is refused. ONNX graphs
# are protobuf: onnxruntime runs only its own operators from them, never code they carry.
ALLOWED_SUFFIXES = (".json", ".jsonl", ".md", ".onnx", ".png", ".safetensors", ".txt", ".yaml")
ALLOWED_NAMES = ("LICENSE",)
_CHUNK = 1 << 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # a model name: one plain folder name


class ArchiveError(InputError):
    """An archive that is not used: damaged, changed, foreign or unsafe (one line)."""


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_archive(output: str | os.PathLike, members: Mapping[str, bytes | Path], manifest: dict) -> Path:
    """Write ``members`` (``{name: bytes or file}``) and ``manifest`` (with ``format``,
    ``format_version`` and ``members`` set here) as one zip, atomically. Weights are stored
    uncompressed (floats do not deflate, and reading them back stays fast), text is deflated."""
    listed = {}
    for name, content in sorted(members.items()):
        _check_name(output, name)
        data_hash = hashlib.sha256(content).hexdigest() if isinstance(content, bytes) else sha256_file(content)
        size = len(content) if isinstance(content, bytes) else Path(content).stat().st_size
        listed[name] = {"sha256": data_hash, "size": size}
    record = {"format": ARCHIVE_FORMAT, "format_version": FORMAT_VERSION, **manifest, "members": listed}
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr(MANIFEST, json.dumps(record, indent=1), compress_type=zipfile.ZIP_DEFLATED)
        for name, content in sorted(members.items()):
            kind = zipfile.ZIP_STORED if name.endswith((".safetensors", ".png")) else zipfile.ZIP_DEFLATED
            if isinstance(content, bytes):
                zf.writestr(name, content, compress_type=kind)
            else:
                zf.write(content, name, compress_type=kind)
    return output


def check_model_name(name: str, archive) -> str:
    """A name that is one plain folder name (letters, digits, ``.``, ``_``, ``-``)."""
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise ArchiveError(f"{archive}: model name {name!r} is not usable as a folder name (letters, digits, . _ -)")
    return name


def _check_name(archive, name: str) -> None:
    """A member name that stays inside the archive's folder: relative, forward slashes, no ``..``."""
    path = PurePosixPath(name)
    bad = (
        not name
        or "\\" in name
        or path.is_absolute()
        or ":" in path.parts[0]
        or any(part in ("..", ".", "") for part in name.split("/"))
    )
    if bad:
        raise ArchiveError(f"{archive}: refused: member {name!r} points outside the archive's folder")


def _check_kind(archive, name: str, head: bytes) -> None:
    """Only the kinds of file a model is made of, and never a pickle (whatever its name)."""
    pickle = head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    if pickle or name.endswith((".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".npy", ".npz")):
        raise ArchiveError(f"{archive}: refused: member {name!r} is a pickle or pickle-based file; archives are "
                           "read without unpickling anything")  # fmt: skip
    base = PurePosixPath(name).name
    if not (base.endswith(ALLOWED_SUFFIXES) or base in ALLOWED_NAMES):
        raise ArchiveError(f"{archive}: refused: member {name!r} is not a kind of file a model archive holds "
                           f"({', '.join(ALLOWED_SUFFIXES)})")  # fmt: skip
    if base.endswith(".safetensors") and len(head) >= 9 and head[8:9] != b"{":
        raise ArchiveError(f"{archive}: refused: member {name!r} is not a safetensors file")


def _open_zip(archive: Path) -> zipfile.ZipFile:
    if not archive.is_file():
        raise ArchiveError(f"{archive}: no such file")
    try:
        return zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise ArchiveError(f"{archive}: not a masam model archive (not a readable zip: {err})") from None


def _read_manifest(archive: Path, zf: zipfile.ZipFile) -> dict:
    try:
        manifest = json.loads(zf.read(MANIFEST))
    except KeyError:
        raise ArchiveError(f"{archive}: not a masam model archive (no {MANIFEST})") from None
    except (ValueError, zipfile.BadZipFile, OSError) as err:
        raise ArchiveError(f"{archive}: {MANIFEST} is damaged: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ARCHIVE_FORMAT:
        raise ArchiveError(f"{archive}: not a masam model archive ({MANIFEST} names another format)")
    version = manifest.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ArchiveError(f"{archive}: archive format version {version!r}; this masam reads versions 1 to "
                           f"{FORMAT_VERSION} (a newer masam wrote it?)")  # fmt: skip
    members = manifest.get("members")
    if not isinstance(members, dict) or not all(_entry_ok(e) for e in members.values()):
        raise ArchiveError(f"{archive}: {MANIFEST} is damaged: members must map names to their size and sha256")
    return manifest


def _entry_ok(entry) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("size"), int) and entry["size"] >= 0
            and isinstance(entry.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]) is not None)


def _check_entries(archive: Path, zf: zipfile.ZipFile, manifest: dict) -> list[zipfile.ZipInfo]:
    """The entries besides the manifest, after the name, link, duplicate and listing checks."""
    infos, seen = [], set()
    for info in zf.infolist():
        _check_name(archive, info.filename.rstrip("/") if info.is_dir() else info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ArchiveError(f"{archive}: refused: member {info.filename!r} is a link")
        if info.filename in seen:
            raise ArchiveError(f"{archive}: refused: member {info.filename!r} appears twice")
        seen.add(info.filename)
        if not info.is_dir() and info.filename != MANIFEST:
            _check_kind(archive, info.filename, b"")  # by name first; by content when read
            infos.append(info)
    names = {i.filename for i in infos}
    unlisted, missing = sorted(names - set(manifest["members"])), sorted(set(manifest["members"]) - names)
    if unlisted:
        raise ArchiveError(f"{archive}: refused: member {unlisted[0]!r} is not listed in {MANIFEST}")
    if missing:
        raise ArchiveError(f"{archive}: refused: member {missing[0]!r} listed in {MANIFEST} is missing")
    return infos


def _stream(archive: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, expected: dict) -> Iterator[bytes]:
    """The member's bytes in chunks; after the last, the kind, size and sha256 checks have passed."""
    digest, size, first = hashlib.sha256(), 0, True
    try:
        with zf.open(info) as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                if first:
                    _check_kind(archive, info.filename, chunk[:16])
                    first = False
                digest.update(chunk)
                size += len(chunk)
                if size > expected["size"]:  # stop at once, not after inflating a zip bomb
                    break
                yield chunk
    except (zipfile.BadZipFile, OSError, EOFError) as err:  # a CRC error is a damaged archive
        raise ArchiveError(f"{archive}: member {info.filename!r} is damaged: {err}") from None
    if first:
        _check_kind(archive, info.filename, b"")
    if size != expected.get("size") or digest.hexdigest() != expected.get("sha256"):
        raise ArchiveError(f"{archive}: refused: member {info.filename!r} differs from its sha256 in {MANIFEST} "
                           "(damaged or changed)")  # fmt: skip


def verify_archive(archive: str | os.PathLike) -> dict:
    """Check everything (see the module) and return the manifest; :class:`ArchiveError` otherwise."""
    archive = Path(archive)
    with _open_zip(archive) as zf:
        manifest = _read_manifest(archive, zf)
        for info in _check_entries(archive, zf, manifest):
            for _ in _stream(archive, zf, info, manifest["members"][info.filename]):
                pass
    return manifest


def extract_archive(archive: str | os.PathLike, destination: str | os.PathLike) -> dict:
    """Check ``archive`` while writing its members under ``destination``, a new folder that appears
    only when every check has passed (a refused archive leaves nothing). Returns the manifest."""
    archive, destination = Path(archive), Path(destination)
    if destination.exists():
        raise ArchiveError(f"{destination}: already exists")
    with _open_zip(archive) as zf:
        manifest = _read_manifest(archive, zf)
        infos = _check_entries(archive, zf, manifest)
        destination.parent.mkdir(parents=True, exist_ok=True)
        with atomic_folder(destination) as tmp:
            for info in infos:  # each member's kind, size and sha256 are checked as it is written
                target = tmp.joinpath(*info.filename.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as out:
                    for chunk in _stream(archive, zf, info, manifest["members"][info.filename]):
                        out.write(chunk)
            (tmp / MANIFEST).write_bytes(zf.read(MANIFEST))
    return manifest


@contextlib.contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """A temporary folder beside ``path``, renamed to ``path`` on success and removed on failure,
    so that a folder either appears whole or not at all."""
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 would hide the model from other users
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
