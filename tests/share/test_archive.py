"""The archive format: written with a manifest of sha256s, read back only when every check passes,
and refused in one line, with nothing written, when damaged, changed, foreign or unsafe."""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile

import pytest

from masam.share.archive import (
    FORMAT_VERSION,
    MANIFEST,
    ArchiveError,
    extract_archive,
    verify_archive,
    write_archive,
)

WEIGHTS = b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + b" " * 14  # a safetensors header, no tensors


@pytest.fixture
def archive(tmp_path):
    members = {"README.md": b"# card\n", "folds/fold_0/model_best.safetensors": WEIGHTS,
               "folds/fold_0/config.json": b'{"train": {}}'}  # fmt: skip
    return write_archive(tmp_path / "model.zip", members, {"name": "tiny"})


def rewrite(source, target, change):
    """Copy ``source`` to ``target`` member by member through ``change(name, data) -> [(name, data)]``,
    bypassing masam's writer (as a tamperer would)."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            for name, data in change(info.filename, zin.read(info)):
                zout.writestr(name, data)
    return target


def with_manifest(edit):
    def change(name, data):
        if name == MANIFEST:
            manifest = json.loads(data)
            edit(manifest)
            return [(name, json.dumps(manifest))]
        return [(name, data)]

    return change


def test_written_archive_lists_every_member_and_reads_back(archive, tmp_path):
    manifest = verify_archive(archive)
    assert manifest["format"] == "masam-model" and manifest["format_version"] == FORMAT_VERSION
    assert manifest["name"] == "tiny"
    assert manifest["members"]["README.md"] == {"sha256": hashlib.sha256(b"# card\n").hexdigest(), "size": 7}
    out = tmp_path / "unpacked"
    extract_archive(archive, out)
    assert (out / "folds" / "fold_0" / "model_best.safetensors").read_bytes() == WEIGHTS
    assert json.loads((out / MANIFEST).read_text()) == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.zip", "unpacked"]  # no temporary left


def _pickle_member(name, data):
    out = [(name, data)]
    if name == MANIFEST:
        manifest = json.loads(data)
        blob = pickle.dumps({"a": 1})
        manifest["members"]["folds/fold_0/extra.json"] = {"sha256": hashlib.sha256(blob).hexdigest(),
                                                          "size": len(blob)}  # fmt: skip
        out = [(name, json.dumps(manifest)), ("folds/fold_0/extra.json", blob)]
    return out


TAMPERED = {
    "changed member": (lambda n, d: [(n, d.replace(b"card", b"cart"))], "README.md.*differs from its sha256"),
    "path outside": (lambda n, d: [(n, d)] + ([("../evil.md", b"x")] if n == MANIFEST else []),
                     "'../evil.md' points outside"),
    "absolute path": (lambda n, d: [(n, d)] + ([("/etc/evil.md", b"x")] if n == MANIFEST else []),
                      "points outside"),
    "pickle inside": (_pickle_member, "extra.json' is a pickle"),
    "pickle by name": (lambda n, d: [(n, d)] + ([("model.pth", b"PK")] if n == MANIFEST else []), "is a pickle"),
    "unknown version": (with_manifest(lambda m: m.update(format_version=FORMAT_VERSION + 1)),
                        f"format version {FORMAT_VERSION + 1}; this masam reads versions 1 to {FORMAT_VERSION}"),
    "foreign format": (with_manifest(lambda m: m.update(format="other")), "not a masam model archive"),
    "unlisted member": (lambda n, d: [(n, d)] + ([("notes.txt", b"x")] if n == MANIFEST else []),
                        "'notes.txt' is not listed"),
    "missing member": (lambda n, d: [] if n == "README.md" else [(n, d)], "'README.md' listed in manifest.json is "
                       "missing"),
    "no manifest": (lambda n, d: [] if n == MANIFEST else [(n, d)], "no manifest.json"),
    "damaged manifest": (with_manifest(lambda m: m["members"]["README.md"].update(size="7")),
                         "manifest.json is damaged: members must map names to their size and sha256"),
    # a small member swapped for 64 MiB of zeros (a few KiB deflated); the reader stops past the listed size
    "inflating member": (lambda n, d: [(n, bytes(64 << 20) if n == "README.md" else d)],
                         "README.md.*differs from its sha256"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_tampered_archives_are_refused_in_one_line_and_nothing_is_written(archive, tmp_path, case):
    change, message = TAMPERED[case]
    bad = rewrite(archive, tmp_path / "bad.zip", change)
    with pytest.raises(ArchiveError, match=message) as err:
        extract_archive(bad, tmp_path / "out" / "model")
    assert "\n" not in str(err.value) and str(bad) in str(err.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_not_a_zip_and_a_truncated_zip_are_refused(archive, tmp_path):
    text = tmp_path / "notes.zip"
    text.write_text("hello")
    with pytest.raises(ArchiveError, match="not a masam model archive"):
        verify_archive(text)
    cut = tmp_path / "cut.zip"
    cut.write_bytes(archive.read_bytes()[:-200])
    with pytest.raises(ArchiveError):
        verify_archive(cut)


def test_a_link_member_is_refused(archive, tmp_path):
    bad = tmp_path / "link.zip"
    with zipfile.ZipFile(archive) as zin, zipfile.ZipFile(bad, "w") as zout:
        manifest = json.loads(zin.read(MANIFEST))
        manifest["members"]["link.md"] = {"sha256": hashlib.sha256(b"/etc/passwd").hexdigest(), "size": 11}
        zout.writestr(MANIFEST, json.dumps(manifest))
        for info in zin.infolist():
            if info.filename != MANIFEST:
                zout.writestr(info, zin.read(info))
        link = zipfile.ZipInfo("link.md")
        link.external_attr = (0o120777 << 16)  # a symbolic link
        zout.writestr(link, b"/etc/passwd")
    with pytest.raises(ArchiveError, match="'link.md' is a link"):
        verify_archive(bad)


def test_writer_refuses_unsafe_names(tmp_path):
    with pytest.raises(ArchiveError, match="points outside"):
        write_archive(tmp_path / "m.zip", {"../x.md": b"x"}, {})
    assert list(tmp_path.iterdir()) == []
