"""What happens to an object on its way into storage: defaulting, the metadata the server owns, and
validation that answers 422 Invalid with the field paths of every problem (as the real server does)."""

from __future__ import annotations

import copy
import json
import re
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from vpcnet.lab.kubeapi.errors import Cause, bad_request, invalid
from vpcnet.lab.kubeapi.resources import ResourceType
from vpcnet.lab.kubeapi.schema import prune, schema_causes, shape_causes

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Kinds whose names must be DNS labels (the rest take DNS subdomains).
_LABEL_NAMED = frozenset({"Namespace"})
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what the real server draws from (no vowels)
_SERVER_OWNED = ("uid", "creationTimestamp", "generation", "resourceVersion", "selfLink")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_type_meta(rt: ResourceType, obj: Any) -> None:
    """The body is an object of this kind at this version (400 BadRequest otherwise, as the real server)."""
    if not isinstance(obj, dict):
        raise bad_request("the body of the request must be a JSON object")
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    if kind not in (None, rt.kind) or api_version not in (None, rt.api_version):
        raise bad_request(
            f"the API version in the data ({api_version}) does not match the expected API version "
            f"({rt.api_version})"
            if api_version != rt.api_version
            else f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
        )
    if not isinstance(obj.get("metadata", {}), dict):
        raise bad_request("metadata must be an object")
    for field in ("spec", "status"):  # the defaults below write into them (the fault suite's fuzz found this)
        if obj.get(field) is not None and not isinstance(obj[field], dict):
            raise bad_request(f"{field} must be an object, not {type(obj[field]).__name__}")


def _name_causes(rt: ResourceType, name: object, path: str = "metadata.name") -> list[Cause]:
    if name is None or name == "":
        return [Cause(path, "Required value: name or generateName is required", "FieldValueRequired")]
    if not isinstance(name, str):  # a fuzzed `name: true` once reached len() and answered 500
        return [Cause(path, f"Invalid value: {json.dumps(name)}: must be a string")]
    pattern, what, limit = (
        (_DNS_LABEL, "RFC 1123 label", 63)
        if rt.kind in _LABEL_NAMED
        else (_DNS_SUBDOMAIN, "RFC 1123 subdomain", 253)
    )
    if len(name) > limit or not pattern.match(name):
        return [
            Cause(
                path,
                f'Invalid value: "{name}": a lowercase {what} must consist of lower case alphanumeric '
                "characters, '-' or '.', and must start and end with an alphanumeric character",
            )
        ]
    return []


def _metadata_causes(meta: dict[str, Any]) -> list[Cause]:
    causes = []
    for section in ("labels", "annotations"):
        value = meta.get(section)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            causes.append(Cause(f"metadata.{section}", "Invalid value: must be a map of strings"))
    return causes


def _pod_causes(obj: dict[str, Any]) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [Cause("spec", "Required value", "FieldValueRequired")]
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [Cause("spec.containers", "Required value", "FieldValueRequired")]
    causes = []
    names: set[str] = set()
    for i, container in enumerate(containers):
        where = f"spec.containers[{i}]"
        if not isinstance(container, dict):
            causes.append(Cause(where, "Invalid value: must be an object"))
            continue
        name = container.get("name")
        if not name:
            causes.append(Cause(f"{where}.name", "Required value", "FieldValueRequired"))
        elif not isinstance(name, str):  # an object here once reached the set below (unhashable)
            causes.append(Cause(f"{where}.name", f"Invalid value: {json.dumps(name)}: must be a string"))
        elif name in names:
            causes.append(Cause(f"{where}.name", f'Duplicate value: "{name}"', "FieldValueDuplicate"))
        else:
            names.add(name)
        image = container.get("image")
        if not image:
            causes.append(Cause(f"{where}.image", "Required value", "FieldValueRequired"))
        elif not isinstance(image, str):
            causes.append(Cause(f"{where}.image", f"Invalid value: {json.dumps(image)}: must be a string"))
    return causes


def _string_causes(fields: dict[str, Any], where: str) -> list[Cause]:
    """Fields of a CRD that must be strings when present (an object there once reached `in` and `+`)."""
    return [
        Cause(f"{where}.{name}", f"Invalid value: {json.dumps(value)}: must be a string")
        for name, value in fields.items()
        if value is not None and not isinstance(value, str)
    ]


def _crd_causes(obj: dict[str, Any]) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [Cause("spec", "Required value", "FieldValueRequired")]
    raw_names = spec.get("names")
    names: dict[str, Any] = raw_names if isinstance(raw_names, dict) else {}
    mistyped = _string_causes({"group": spec.get("group")}, "spec") + _string_causes(
        {k: names.get(k) for k in ("plural", "kind", "singular", "listKind")}, "spec.names"
    )
    if mistyped:
        return mistyped
    causes = []
    group = spec.get("group") or ""
    plural, kind = names.get("plural") or "", names.get("kind") or ""
    if not group:
        causes.append(Cause("spec.group", "Required value", "FieldValueRequired"))
    elif "." not in group:
        causes.append(
            Cause("spec.group", f'Invalid value: "{group}": should be a domain with at least one dot')
        )
    if not plural:
        causes.append(Cause("spec.names.plural", "Required value", "FieldValueRequired"))
    if not kind:
        causes.append(Cause("spec.names.kind", "Required value", "FieldValueRequired"))
    name = (obj.get("metadata") or {}).get("name", "")
    if plural and group and name != f"{plural}.{group}":
        causes.append(
            Cause("metadata.name", f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group')
        )
    scope = spec.get("scope")
    if scope not in ("Namespaced", "Cluster"):
        causes.append(
            Cause(
                "spec.scope",
                f'Unsupported value: "{scope}": supported values: "Cluster", "Namespaced"',
                "FieldValueNotSupported",
            )
        )
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        causes.append(Cause("spec.versions", "Required value", "FieldValueRequired"))
    else:
        storage = [v for v in versions if isinstance(v, dict) and v.get("storage")]
        if len(storage) != 1:
            causes.append(
                Cause(
                    "spec.versions", "Invalid value: must have exactly one version marked as storage version"
                )
            )
        for i, version in enumerate(versions):
            schema = version.get("schema") if isinstance(version, dict) else None
            if not isinstance(version, dict) or not version.get("name"):
                causes.append(Cause(f"spec.versions[{i}].name", "Required value", "FieldValueRequired"))
            elif not isinstance(version["name"], str):
                causes.append(Cause(f"spec.versions[{i}].name", "Invalid value: must be a string"))
            elif not isinstance(schema, dict) or not isinstance(schema.get("openAPIV3Schema"), dict):
                causes.append(
                    Cause(
                        f"spec.versions[{i}].schema.openAPIV3Schema",
                        "Required value: schemas are required",
                        "FieldValueRequired",
                    )
                )
            else:
                causes += _version_causes(version, f"spec.versions[{i}]")
    return causes + _name_list_causes(names)


def _version_causes(version: dict[str, Any], where: str) -> list[Cause]:
    """The parts of a served version that the server reads when it serves, checks and prints objects."""
    causes = shape_causes(version["schema"]["openAPIV3Schema"], f"{where}.schema.openAPIV3Schema")
    for flag in ("served", "storage"):
        if flag in version and not isinstance(version[flag], bool):
            causes.append(Cause(f"{where}.{flag}", "Invalid value: must be a boolean"))
    if version.get("subresources") is not None and not isinstance(version["subresources"], dict):
        causes.append(Cause(f"{where}.subresources", "Invalid value: must be an object"))
    columns = version.get("additionalPrinterColumns")
    if columns is not None and not isinstance(columns, list):
        causes.append(Cause(f"{where}.additionalPrinterColumns", "Invalid value: must be an array"))
    for j, column in enumerate(columns if isinstance(columns, list) else []):
        at = f"{where}.additionalPrinterColumns[{j}]"
        if not isinstance(column, dict):
            causes.append(Cause(at, "Invalid value: must be an object"))
            continue
        for key in ("name", "jsonPath"):
            if not isinstance(column.get(key), str) or not column[key]:
                causes.append(Cause(f"{at}.{key}", "Required value", "FieldValueRequired"))
        priority = column.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool) or priority < 0:
            causes.append(Cause(f"{at}.priority", "Invalid value: must be a non-negative integer"))
    return causes


def _name_list_causes(names: dict[str, Any]) -> list[Cause]:
    return [
        Cause(f"spec.names.{key}", "Invalid value: must be an array of strings")
        for key in ("shortNames", "categories")
        if names.get(key) is not None
        and not (isinstance(names[key], list) and all(isinstance(n, str) for n in names[key]))
    ]


def validate(rt: ResourceType, obj: dict[str, Any]) -> None:
    """Raise 422 Invalid listing every problem found (nothing is written)."""
    meta = obj.get("metadata") or {}
    causes = _name_causes(rt, meta.get("name", "")) + _metadata_causes(meta)
    if rt.kind == "Pod":
        causes += _pod_causes(obj)
    elif rt.kind == "CustomResourceDefinition" and rt.builtin:
        causes += _crd_causes(obj)
    elif rt.schema is not None:
        causes += schema_causes(rt.schema, obj)
    if causes:
        raise invalid(rt.kind, rt.group, meta.get("name", ""), causes)


def _image_pull_policy(image: str) -> str:
    tag = image.rsplit("/", 1)[-1]
    return "Always" if ":" not in tag or tag.endswith(":latest") else "IfNotPresent"


def apply_defaults(rt: ResourceType, obj: dict[str, Any]) -> None:
    """Fill in what the real server's defaulters fill in for the kinds that the lab uses."""
    if rt.kind == "Pod" and isinstance(obj.get("spec"), dict):
        spec = obj["spec"]
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("securityContext", {})
        spec.setdefault("enableServiceLinks", True)
        containers = spec.get("containers")  # defaulting runs before validation: any shape can be here
        for container in containers if isinstance(containers, list) else []:
            if isinstance(container, dict) and isinstance(container.get("image"), str):
                container.setdefault("imagePullPolicy", _image_pull_policy(container["image"]))
                container.setdefault("terminationMessagePath", "/dev/termination-log")
                container.setdefault("terminationMessagePolicy", "File")
                container.setdefault("resources", {})
    elif rt.kind == "Namespace":
        obj["spec"], obj["status"] = obj.get("spec") or {}, obj.get("status") or {}  # null: empty
        obj["spec"].setdefault("finalizers", ["kubernetes"])
        obj["status"].setdefault("phase", "Active")
    elif rt.schema is not None:
        prune(rt.schema, obj)
    elif rt.kind == "CustomResourceDefinition" and rt.builtin:
        versions = (obj.get("spec") or {}).get("versions")
        for version in versions if isinstance(versions, list) else []:
            if isinstance(version, dict):
                version.setdefault("served", True)


def prepare_create(rt: ResourceType, obj: dict[str, Any], namespace: str | None) -> dict[str, Any]:
    """A copy of obj as it is to be stored: type meta, generated name, uid, timestamps, generation, status."""
    check_type_meta(rt, obj)
    obj = copy.deepcopy(obj)
    obj["kind"], obj["apiVersion"] = rt.kind, rt.api_version
    meta = obj.setdefault("metadata", {})
    for owned in _SERVER_OWNED:
        meta.pop(owned, None)
    if rt.namespaced:
        if meta.get("namespace") not in (None, "", namespace):
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        meta["namespace"] = namespace
    else:
        meta.pop("namespace", None)
    if not meta.get("name") and isinstance(meta.get("generateName"), str) and meta["generateName"]:
        meta["name"] = meta["generateName"] + "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(5))
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = now()
    meta["generation"] = 1
    if rt.kind == "Pod":
        obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}  # the real server resets it too
    elif rt.status_subresource and not rt.builtin:
        obj.pop("status", None)  # custom resources: status only through /status
    elif rt.kind == "CustomResourceDefinition":
        obj.pop("status", None)
    apply_defaults(rt, obj)
    validate(rt, obj)
    if rt.kind == "CustomResourceDefinition":
        obj["status"] = crd_status(obj)
    return obj


def crd_status(crd: dict[str, Any]) -> dict[str, Any]:
    """A CRD is served as soon as it is stored: its names are accepted and it is established."""
    stamp = now()
    return {
        "acceptedNames": crd["spec"]["names"],
        "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
        "conditions": [
            {"type": t, "status": "True", "lastTransitionTime": stamp, "reason": r, "message": m}
            for t, r, m in (
                ("NamesAccepted", "NoConflicts", "no conflicts found"),
                ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            )
        ],
    }


def _without(obj: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in keys}


def prepare_update(rt: ResourceType, old: dict[str, Any], body: Any, *, status_only: bool) -> dict[str, Any]:
    """The object to store for a replace of `old` by `body`: server-owned metadata kept, status or the rest
    kept as the subresource says, generation bumped when the spec changed."""
    check_type_meta(rt, body)
    new: dict[str, Any] = copy.deepcopy(body)
    new["kind"], new["apiVersion"] = rt.kind, rt.api_version
    meta = new.setdefault("metadata", {})
    old_meta = old["metadata"]
    for field in ("name", "namespace"):
        if meta.get(field, old_meta.get(field)) != old_meta.get(field):
            raise bad_request(f"metadata.{field} cannot be changed (was {old_meta.get(field)!r})")
    for owned in ("uid", "creationTimestamp", "generation", "namespace", "name"):
        if owned in old_meta:
            meta[owned] = old_meta[owned]
    meta.pop("resourceVersion", None)
    if status_only:
        result = copy.deepcopy(old)
        result["metadata"].pop("resourceVersion", None)
        if "status" in new:
            result["status"] = new["status"]
        else:
            result.pop("status", None)
        validate(rt, result)
        return result
    if rt.status_subresource:
        if "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        else:
            new.pop("status", None)
    apply_defaults(rt, new)
    validate(rt, new)
    if _without(new, "metadata", "status") != _without(old, "metadata", "status"):
        meta["generation"] = int(old_meta.get("generation", 1)) + 1
    if rt.kind == "CustomResourceDefinition":
        new["status"] = crd_status(new)
    return new
