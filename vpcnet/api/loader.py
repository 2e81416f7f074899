"""Multi-document YAML -> validated resources; all faults reported at once, nothing returned on error."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from vpcnet.api.base import ObjectMeta, Resource, kind_class, known_kinds
from vpcnet.api.errors import Fault, ValidationError
from vpcnet.api.fields import Ctx, check_known, quote
from vpcnet.api.yamlread import ManifestDecodeError, decode_manifest, documents_with_lines


def parse_resource(doc: Any, document: str) -> Resource:
    """One already-decoded document (a dict) -> resource; raises ValidationError naming `document`."""
    resources, faults = _parse(doc, document)
    if faults:
        raise ValidationError(faults)
    assert resources is not None
    return resources


def load_documents(data: str | bytes, source: str = "<input>") -> list[Resource]:
    """Validate every document in `data` (text, or bytes that must be UTF-8); return the resources, or raise
    ValidationError listing every fault of every document as
    "<source>:<line> (document N) <Kind> <ns>/<name>: <field path>: <message>".
    Empty documents (e.g. a trailing ---) are skipped; a List kind's items are expanded.
    """
    try:
        docs = documents_with_lines(decode_manifest(data))
    except ManifestDecodeError as exc:
        raise ValidationError([Fault(source, "", str(exc))]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:line {mark.line + 1} column {mark.column + 1}" if mark is not None else source
        raise ValidationError([Fault(where, "", f"not valid YAML: {exc}")]) from exc
    out: list[Resource] = []
    faults: list[Fault] = []
    for index, (line, doc) in enumerate(docs):
        if doc is None:
            continue
        here = f"{source}:{line} (document {index + 1})"
        items: list[tuple[Any, str]]
        if isinstance(doc, Mapping) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            items = [(item, f"{here} items[{i}]") for i, item in enumerate(doc["items"])]
        else:
            items = [(doc, here)]
        for item, where in items:
            resource, item_faults = _parse(item, where)
            faults += item_faults
            if resource is not None:
                out.append(resource)
    if faults:
        raise ValidationError(faults)
    return out


def load_files(paths: Iterable[str | Path]) -> list[Resource]:
    """Load several files (use "-" for standard input is the caller's business); faults from all files."""
    out: list[Resource] = []
    faults: list[Fault] = []
    for path in paths:
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            faults.append(Fault(str(p), "", f"cannot read: {exc.strerror or exc}"))
            continue
        try:
            out += load_documents(data, str(p))
        except ValidationError as exc:
            faults += exc.faults
    if faults:
        raise ValidationError(faults)
    return out


def dump_documents(resources: Iterable[Resource]) -> str:
    return yaml.safe_dump_all([r.to_dict() for r in resources], sort_keys=False)


def _parse(doc: Any, where: str) -> tuple[Resource | None, list[Fault]]:
    if not isinstance(doc, Mapping):
        return None, [
            Fault(
                where, "", f"a document must be a mapping with apiVersion and kind, got {type(doc).__name__}"
            )
        ]
    api_version = doc.get("apiVersion")
    kind = doc.get("kind")
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
    name = meta.get("name") if isinstance(meta, Mapping) else None
    namespace = meta.get("namespace") if isinstance(meta, Mapping) else None
    label = f"{where} {kind or '?'} " + (f"{namespace}/{name}" if namespace else f"{name or '?'}")
    ctx = Ctx(label)
    if not isinstance(api_version, str) or not api_version:
        ctx.fault("apiVersion", "required")
    if not isinstance(kind, str) or not kind:
        ctx.fault("kind", "required")
    if ctx.faults:
        return None, ctx.faults
    assert isinstance(api_version, str) and isinstance(kind, str)
    cls = kind_class(api_version, kind)
    if cls is None:
        known = ", ".join(f"{k} ({v})" for v, k in known_kinds())
        ctx.fault("kind", f"unknown kind {quote(kind)} in apiVersion {quote(api_version)}; known: {known}")
        return None, ctx.faults
    data = {str(k): v for k, v in doc.items()}
    check_known(ctx, data, "", cls.TOP_LEVEL)
    metadata = ObjectMeta.parse(ctx, data.get("metadata"), namespaced=cls.NAMESPACED, name_rule=cls.NAME_RULE)
    resource = cls.parse(ctx, data, metadata)
    if ctx.faults:
        return None, ctx.faults
    return resource, []
