"""Pack a root filesystem directory into an OCI image archive, reproducibly (standard library only).

The same tree and the same SOURCE_DATE_EPOCH give byte-identical layers and archive:
- entries in sorted order, one walk, parents before children;
- mtimes clamped to the epoch, or set to it (per layer, below);
- numeric uid/gid as on disk (the build runs as root, so they are the ones dpkg gave), no user/group names;
- GNU tar format: long names without pax headers, hence no pax atime/ctime records;
- gzip with mtime 0 and no file name in its header.

A layer is chosen by path prefixes: pack_layers(root, [("app", ["opt/vpcnet"], "set"), ("base", [], "clamp")],
...) puts each entry in the first layer whose prefixes match (an empty list matches everything left), and
adds the parent directories a layer's entries need, so each layer unpacks on its own. "clamp" lowers newer
mtimes to the epoch (Debian's files keep their packages' mtimes, which their .pyc files record); "set" gives
every entry the epoch (files copied from a checkout carry its checkout time, which is no input of the build).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
# The runtime supplies these; their contents in a build chroot (device nodes, mounts) are not the image's.
SKIPPED_CONTENTS = ("dev", "proc", "sys", "run", "tmp")


@dataclass(frozen=True)
class Blob:
    digest: str  # sha256:<hex> of the stored (compressed) bytes
    size: int
    path: Path  # where the bytes are


@dataclass(frozen=True)
class Layer:
    blob: Blob
    diff_id: str  # sha256 of the uncompressed tar, as the image config lists it
    name: str
    entries: int


class _Hashing(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `sink`."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink, self.sha, self.size = sink, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.sha.update(data)
        self.size += len(data)
        self.sink.write(data)
        return len(data)


def _entries(root: Path) -> list[str]:
    out: list[str] = []
    skip_under: tuple[str, ...] = tuple(f"{d}/" for d in SKIPPED_CONTENTS)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted([*dirnames, *filenames]):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rel.startswith(skip_under):
                continue
            out.append(rel)
    return sorted(out)


def _tarinfo(
    root: Path, rel: str, epoch: int, inodes: dict[tuple[int, int], str]
) -> tuple[tarfile.TarInfo, bool]:
    """The header for rel, and whether file data follows."""
    st = os.lstat(root / rel)
    info = tarfile.TarInfo(rel + ("/" if stat.S_ISDIR(st.st_mode) else ""))
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid, info.uname, info.gname = st.st_uid, st.st_gid, "", ""
    info.mtime = min(int(st.st_mtime), epoch)
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(root / rel)
    elif stat.S_ISREG(st.st_mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in inodes:
            info.type, info.linkname = tarfile.LNKTYPE, inodes[key]
            return info, False
        inodes[key] = rel
        info.size = st.st_size
        return info, True
    elif stat.S_ISFIFO(st.st_mode):
        info.type = tarfile.FIFOTYPE
    else:
        raise ValueError(f"{root / rel}: device nodes and sockets do not belong in an image layer")
    return info, False


def _layer_of(rel: str, layers: Sequence[tuple[str, Sequence[str], str]]) -> int:
    for index, (_, prefixes, _) in enumerate(layers):
        if not prefixes or any(rel == p or rel.startswith(p + "/") for p in prefixes):
            return index
    raise ValueError(f"{rel}: no layer takes it (give the last layer no prefixes)")


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def pack_layers(
    root: Path, layers: Sequence[tuple[str, Sequence[str], str]], out_dir: Path, epoch: int, level: int = 6
) -> list[Layer]:
    """Write one gzip layer per (name, prefixes) under out_dir; returns them in order, bottom first."""
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen: list[list[str]] = [[] for _ in layers]
    for rel in _entries(root):
        chosen[_layer_of(rel, layers)].append(rel)
    result = []
    for (name, _, mtimes), rels in zip(layers, chosen, strict=True):
        if mtimes not in ("clamp", "set"):
            raise ValueError(f"layer {name}: mtimes must be clamp or set, not {mtimes!r}")
        members = set(rels)
        for rel in rels:
            members.update(_parents(rel))
        path = out_dir / f"{name}.tar.gz"
        result.append(_write_layer(root, sorted(members), path, epoch, level, name, mtimes == "set"))
    return result


def _write_layer(
    root: Path, rels: list[str], path: Path, epoch: int, level: int, name: str, set_mtimes: bool
) -> Layer:
    inodes: dict[tuple[int, int], str] = {}
    with open(path, "wb") as raw:
        compressed = _Hashing(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, compresslevel=level, mtime=0) as gz:
            plain = _Hashing(gz)  # type: ignore[arg-type]
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.GNU_FORMAT) as tar:  # type: ignore[call-overload]
                for rel in rels:
                    info, has_data = _tarinfo(root, rel, epoch, inodes)
                    if set_mtimes:
                        info.mtime = epoch
                    if has_data:
                        with open(root / rel, "rb") as f:
                            tar.addfile(info, f)
                    else:
                        tar.addfile(info)
    blob = Blob("sha256:" + compressed.sha.hexdigest(), compressed.size, path)
    return Layer(blob, "sha256:" + plain.sha.hexdigest(), name, len(rels))


def _json_blob(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _descriptor(media_type: str, digest: str, size: int) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size}


def image_config(layers: Sequence[Layer], config: dict[str, Any], epoch: int) -> dict[str, Any]:
    created = _rfc3339(epoch)
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": created, "created_by": f"scripts/image: {layer.name}"} for layer in layers],
    }


def _rfc3339(epoch: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_archive(
    path: Path, layers: Sequence[Layer], config: dict[str, Any], name: str, epoch: int
) -> dict[str, str]:
    """Write the OCI image layout archive at path, the image tagged `name` (registry/repo:tag) for
    `ctr images import`; returns the digests of the manifest and config."""
    config_bytes = _json_blob(image_config(layers, config, epoch))
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": _descriptor(CONFIG_MEDIA_TYPE, config_digest, len(config_bytes)),
        "layers": [_descriptor(LAYER_MEDIA_TYPE, la.blob.digest, la.blob.size) for la in layers],
    }
    manifest_bytes = _json_blob(manifest)
    manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    entry = _descriptor(MANIFEST_MEDIA_TYPE, manifest_digest, len(manifest_bytes))
    entry["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
    }
    index = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": [entry]}
    small = {
        "oci-layout": _json_blob({"imageLayoutVersion": "1.0.0"}),
        "index.json": _json_blob(index),
        f"blobs/sha256/{config_digest[7:]}": config_bytes,
        f"blobs/sha256/{manifest_digest[7:]}": manifest_bytes,
    }
    temp = path.with_name(f".{path.name}.tmp")
    with tarfile.open(temp, "w", format=tarfile.GNU_FORMAT) as tar:
        for directory in ("blobs/", "blobs/sha256/"):
            tar.addfile(_member(directory, 0, epoch, tarfile.DIRTYPE))
        members: list[tuple[str, bytes | Path, int]] = [(k, v, len(v)) for k, v in small.items()]
        members += [(f"blobs/sha256/{la.blob.digest[7:]}", la.blob.path, la.blob.size) for la in layers]
        for member, source, size in sorted(members, key=lambda m: m[0]):
            info = _member(member, size, epoch, tarfile.REGTYPE)
            if isinstance(source, bytes):
                tar.addfile(info, io.BytesIO(source))
            else:
                with open(source, "rb") as f:
                    tar.addfile(info, f)
    os.replace(temp, path)
    return {"manifest": manifest_digest, "config": config_digest}


def _member(name: str, size: int, epoch: int, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime = kind, size, epoch
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.uname = info.gname = ""
    return info
