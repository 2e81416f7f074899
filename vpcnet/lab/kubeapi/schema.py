"""Custom resources against their CRD's openAPIV3Schema: the structural checks the real server makes
(type, required, enum, bounds, nested properties and items) and pruning of fields the schema does not
know (unless `x-kubernetes-preserve-unknown-fields`). Formats and CEL rules are not checked."""

from __future__ import annotations

from typing import Any

from vpcnet.lab.kubeapi.errors import Cause

_ROOT_KEPT = ("apiVersion", "kind", "metadata")
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
}


def _type_ok(expected: str, value: Any) -> bool:
    if expected in ("integer", "number") and isinstance(value, bool):
        return False
    if expected == "number" and isinstance(value, float):
        return True
    return isinstance(value, _TYPES.get(expected, (object,)))


def _check(schema: dict[str, Any], value: Any, path: str, causes: list[Cause]) -> None:
    if value is None:
        if not schema.get("nullable"):
            causes.append(Cause(path, 'Invalid value: "null": must not be null'))
        return
    if (
        schema.get("x-kubernetes-int-or-string")
        and isinstance(value, int | str)
        and not isinstance(value, bool)
    ):
        return
    expected = schema.get("type")
    if expected and not _type_ok(expected, value):
        causes.append(
            Cause(
                path,
                f'Invalid value: "{_kind_of(value)}": {path} in body must be of type {expected}: '
                f'"{_kind_of(value)}"',
                "FieldValueTypeInvalid",
            )
        )
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(f'"{v}"' for v in schema["enum"])
        causes.append(
            Cause(
                path, f'Unsupported value: "{value}": supported values: {allowed}', "FieldValueNotSupported"
            )
        )
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            causes.append(
                Cause(
                    path,
                    f"Invalid value: {value}: {path} in body should be greater than or equal to "
                    f"{schema['minimum']}",
                )
            )
        if "maximum" in schema and value > schema["maximum"]:
            causes.append(
                Cause(
                    path,
                    f"Invalid value: {value}: {path} in body should be less than or equal to "
                    f"{schema['maximum']}",
                )
            )
    if isinstance(value, str):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            causes.append(
                Cause(
                    path, f"Too long: may not be more than {schema['maxLength']} bytes", "FieldValueTooLong"
                )
            )
        if "minLength" in schema and len(value) < schema["minLength"]:
            causes.append(
                Cause(
                    path,
                    f'Invalid value: "{value}": {path} in body should be at least '
                    f"{schema['minLength']} chars long",
                )
            )
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name in schema.get("required") or []:
            if name not in value:
                causes.append(
                    Cause(f"{path}.{name}" if path else name, "Required value", "FieldValueRequired")
                )
        for name, sub in value.items():
            if path == "" and name in _ROOT_KEPT:
                continue
            child = properties.get(name) or (
                schema.get("additionalProperties")
                if isinstance(schema.get("additionalProperties"), dict)
                else None
            )
            if child is not None:
                _check(child, sub, f"{path}.{name}" if path else name, causes)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _check(schema["items"], item, f"{path}[{i}]", causes)


def _kind_of(value: Any) -> str:
    for name in ("boolean", "integer", "number", "string", "array", "object"):
        if _type_ok(name, value):
            return name
    return "null"


def schema_causes(schema: dict[str, Any], obj: dict[str, Any]) -> list[Cause]:
    """Every place where obj breaks the schema (empty when it fits)."""
    causes: list[Cause] = []
    _check(schema, obj, "", causes)
    return causes


def prune(schema: dict[str, Any], value: Any, root: bool = True) -> None:
    """Drop, in place, object fields the schema does not specify (the real server's pruning)."""
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            known = schema.get("properties") or {}
            for name, sub in value.items():
                if name in known:
                    prune(known[name], sub, False)
            return
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for name in list(value):
            if root and name in _ROOT_KEPT:
                continue
            if name in properties:
                prune(properties[name], value[name], False)
            elif isinstance(extra, dict):
                prune(extra, value[name], False)
            elif extra is not True:
                del value[name]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            prune(schema["items"], item, False)


_BOOL_KEYS = ("nullable", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields")
_NUMBER_KEYS = ("minimum", "maximum")
_COUNT_KEYS = ("minLength", "maxLength")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def shape_causes(schema: Any, path: str) -> list[Cause]:
    """Where a CRD's schema is not itself a well-formed structural schema (checked before it is served,
    so that checking and pruning objects against it cannot meet a shape they do not expect)."""
    if not isinstance(schema, dict):
        return [Cause(path, "Invalid value: must be an object")]
    causes: list[Cause] = []
    kind = schema.get("type")
    if kind is not None and not (isinstance(kind, str) and kind in _TYPES):
        allowed = ", ".join(f'"{name}"' for name in _TYPES)
        causes.append(
            Cause(
                f"{path}.type",
                f"Unsupported value: {kind!r}: supported values: {allowed}",
                "FieldValueNotSupported",
            )
        )
    for key in _BOOL_KEYS:
        if key in schema and not isinstance(schema[key], bool):
            causes.append(Cause(f"{path}.{key}", "Invalid value: must be a boolean"))
    for key in _NUMBER_KEYS:
        if key in schema and not _is_number(schema[key]):
            causes.append(Cause(f"{path}.{key}", "Invalid value: must be a number"))
    for key in _COUNT_KEYS:
        if key in schema and not (isinstance(schema[key], int) and not isinstance(schema[key], bool)):
            causes.append(Cause(f"{path}.{key}", "Invalid value: must be an integer"))
    if "enum" in schema and not isinstance(schema["enum"], list):
        causes.append(Cause(f"{path}.enum", "Invalid value: must be an array"))
    required = schema.get("required")
    if required is not None and not (
        isinstance(required, list) and all(isinstance(r, str) for r in required)
    ):
        causes.append(Cause(f"{path}.required", "Invalid value: must be an array of strings"))
    properties = schema.get("properties")
    if properties is not None:
        if not isinstance(properties, dict):
            causes.append(Cause(f"{path}.properties", "Invalid value: must be an object"))
        else:
            for name, sub in properties.items():
                causes += shape_causes(sub, f"{path}.properties[{name}]")
    extra = schema.get("additionalProperties")
    if extra is not None and not isinstance(extra, bool):
        causes += shape_causes(extra, f"{path}.additionalProperties")
    if "items" in schema:
        causes += shape_causes(schema["items"], f"{path}.items")
    return causes
