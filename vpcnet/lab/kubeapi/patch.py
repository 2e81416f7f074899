"""PATCH bodies applied as kube-apiserver applies them, as pure functions on JSON documents.

- JSON merge patch (RFC 7386, `application/merge-patch+json`),
- JSON patch (RFC 6902, `application/json-patch+json`),
- strategic merge patch (`application/strategic-merge-patch+json`) for the built-in kinds in `patch_keys`,
  following k8s.io/apimachinery's strategicpatch (what kubectl's client-side apply and `kubectl patch` use).

Every function returns a new document and never touches its inputs; a patch that cannot be applied raises
PatchError, whose message says what was wrong and where (a JSON pointer into the patch, or the operation).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from vpcnet.lab.kubeapi.patch_keys import FieldRule, ListMerge, Schema, known_kinds, schema_for


class PatchError(ValueError):
    """A patch that cannot be applied; the message says what was wrong and where."""


# ---------------------------------------------------------------- JSON values and pointers


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _json_equal(left: Any, right: Any) -> bool:
    """JSON equality (RFC 6902 `test`): numbers by value, objects unordered, booleans are not numbers."""
    kind = _json_kind(left)
    if kind != _json_kind(right):
        return False
    if kind == "object":
        return left.keys() == right.keys() and all(_json_equal(left[k], right[k]) for k in left)
    if kind == "array":
        return len(left) == len(right) and all(_json_equal(a, b) for a, b in zip(left, right, strict=True))
    return bool(left == right)


def _pointer(parent: str, token: str | int) -> str:
    """The JSON pointer (RFC 6901) of `token` under `parent`."""
    return f"{parent}/{str(token).replace('~', '~0').replace('/', '~1')}"


def _at(where: str) -> str:
    return f"at {where!r}" if where else "at the top level"


def _show(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True, default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_json(value: Any, where: str) -> None:
    kind = _json_kind(value)
    if kind == "object":
        for key, item in value.items():
            if not isinstance(key, str):
                raise PatchError(f"{_at(where)}: object key {key!r} is not a string")
            _check_json(item, _pointer(where, key))
    elif kind == "array":
        for index, item in enumerate(value):
            _check_json(item, _pointer(where, index))
    elif kind not in ("null", "boolean", "number", "string"):
        raise PatchError(f"{_at(where)}: a {kind} is not a JSON value")


def _require_document(document: Any) -> None:
    if not isinstance(document, dict):
        raise PatchError(f"the document to patch must be a JSON object, got a {_json_kind(document)}")


# ---------------------------------------------------------------- RFC 7386 merge patch


def apply_merge_patch(document: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply a JSON merge patch (RFC 7386): objects merge recursively, null removes a member."""
    _require_document(document)
    _check_json(patch, "")
    if not isinstance(patch, dict):
        raise PatchError(f"a merge patch of an object must be a JSON object, got a {_json_kind(patch)}")
    return _merge_patch(copy.deepcopy(document), patch)


def _merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Merge `patch` into `target` (owned by the caller) in place."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            current = target.get(key)
            target[key] = _merge_patch(current if isinstance(current, dict) else {}, value)
        else:
            target[key] = copy.deepcopy(value)
    return target


# ---------------------------------------------------------------- RFC 6902 JSON patch

_OPERATIONS = ("add", "remove", "replace", "move", "copy", "test")


def apply_json_patch(document: dict[str, Any], operations: Any) -> dict[str, Any]:
    """Apply a JSON patch (RFC 6902) atomically: all operations or, on the first failure, none."""
    _require_document(document)
    if not isinstance(operations, list):
        raise PatchError(f"a JSON patch must be a JSON array of operations, got a {_json_kind(operations)}")
    _check_json(operations, "")
    result: Any = copy.deepcopy(document)
    for index, operation in enumerate(operations):
        result = _apply_operation(result, operation, index)
    if not isinstance(result, dict):
        raise PatchError(f"the patched document must stay a JSON object, it became a {_json_kind(result)}")
    return result


def _member(operation: dict[str, Any], name: str, label: str) -> Any:
    if name not in operation:
        raise PatchError(f"{label}: member {name!r} is missing")
    return operation[name]


def _apply_operation(doc: Any, operation: Any, index: int) -> Any:
    if not isinstance(operation, dict):
        raise PatchError(f"operation {index}: must be a JSON object, got a {_json_kind(operation)}")
    op = _member(operation, "op", f"operation {index}")
    if op not in _OPERATIONS:
        raise PatchError(
            f"operation {index}: unknown op {_show(op)}; expected one of {', '.join(_OPERATIONS)}"
        )
    path = _member(operation, "path", f"operation {index} ({op})")
    if not isinstance(path, str):
        raise PatchError(f"operation {index} ({op}): 'path' must be a string, got {_show(path)}")
    label = f"operation {index} ({op} {path!r})"
    tokens = _parse_pointer(path, label)
    if op == "add":
        return _add(doc, tokens, copy.deepcopy(_member(operation, "value", label)), label)
    if op == "remove":
        return _remove(doc, tokens, label)[0]
    if op == "replace":
        value = copy.deepcopy(_member(operation, "value", label))
        _get(doc, tokens, label)  # the target must exist
        return _add(_remove(doc, tokens, label)[0], tokens, value, label) if tokens else value
    if op == "test":
        expected = _member(operation, "value", label)
        actual = _get(doc, tokens, label)
        if not _json_equal(actual, expected):
            raise PatchError(
                f"{label}: test failed, the value is {_show(actual)}, expected {_show(expected)}"
            )
        return doc
    source = _member(operation, "from", label)
    if not isinstance(source, str):
        raise PatchError(f"{label}: 'from' must be a string, got {_show(source)}")
    from_tokens = _parse_pointer(source, label)
    if op == "copy":
        return _add(doc, tokens, copy.deepcopy(_get(doc, from_tokens, label)), label)
    if from_tokens == tokens:
        _get(doc, from_tokens, label)
        return doc
    if tokens[: len(from_tokens)] == from_tokens:
        raise PatchError(f"{label}: cannot move {source!r} into its own child")
    doc, value = _remove(doc, from_tokens, label)
    return _add(doc, tokens, value, label)


def _parse_pointer(pointer: str, label: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"{label}: JSON pointer {pointer!r} must be empty or start with '/'")
    tokens = pointer[1:].split("/")
    for token in tokens:
        rest = token.replace("~0", "").replace("~1", "")
        if "~" in rest:
            raise PatchError(f"{label}: JSON pointer {pointer!r} has a '~' not followed by 0 or 1")
    return [token.replace("~1", "/").replace("~0", "~") for token in tokens]


def _array_index(token: str, length: int, label: str, *, for_insert: bool) -> int:
    if for_insert and token == "-":
        return length
    if not token.isdigit() or not token.isascii() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(f"{label}: {token!r} is not an array index")
    index = int(token)
    limit = length if for_insert else length - 1
    if index > limit:
        raise PatchError(f"{label}: index {index} is out of range for an array of {length}")
    return index


def _container(doc: Any, tokens: list[str], label: str) -> Any:
    """The value holding the last token of `tokens`."""
    return _get(doc, tokens[:-1], label)


def _get(doc: Any, tokens: list[str], label: str) -> Any:
    value = doc
    for depth, token in enumerate(tokens):
        if isinstance(value, dict):
            if token not in value:
                missing = "".join(_pointer("", t) for t in tokens[: depth + 1])
                raise PatchError(f"{label}: {missing!r} does not exist")
            value = value[token]
        elif isinstance(value, list):
            value = value[_array_index(token, len(value), label, for_insert=False)]
        else:
            where = "".join(_pointer("", t) for t in tokens[:depth]) or "the document"
            raise PatchError(f"{label}: {where!r} is a {_json_kind(value)}, not an object or array")
    return value


def _add(doc: Any, tokens: list[str], value: Any, label: str) -> Any:
    if not tokens:
        return value
    parent = _container(doc, tokens, label)
    token = tokens[-1]
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_array_index(token, len(parent), label, for_insert=True), value)
    else:
        raise PatchError(f"{label}: the parent is a {_json_kind(parent)}, not an object or array")
    return doc


def _remove(doc: Any, tokens: list[str], label: str) -> tuple[Any, Any]:
    """Remove the value at `tokens`; returns the document and the removed value."""
    if not tokens:
        raise PatchError(f"{label}: cannot remove the whole document")
    value = _get(doc, tokens, label)
    parent = _container(doc, tokens, label)
    if isinstance(parent, dict):
        del parent[tokens[-1]]
    else:
        del parent[_array_index(tokens[-1], len(parent), label, for_insert=False)]
    return doc, value


# ---------------------------------------------------------------- strategic merge patch

_PATCH = "$patch"
_RETAIN_KEYS = "$retainKeys"
_DELETE_FROM = "$deleteFromPrimitiveList/"
_SET_ORDER = "$setElementOrder/"
_MISSING: Any = object()


def apply_strategic_merge_patch(document: dict[str, Any], patch: Any, kind_key: str) -> dict[str, Any]:
    """Apply a strategic merge patch to an object of the built-in kind `kind_key` (e.g. "v1/Pod").

    Maps merge recursively and null deletes a key; lists tagged patchStrategy=merge merge by their
    patchMergeKey (or as a set of scalars), other lists are replaced. Directives: `$patch` (replace/delete in
    maps; delete and replace as list items), `$retainKeys`, `$deleteFromPrimitiveList/<field>`,
    `$setElementOrder/<field>`. Custom resources take no strategic merge patch (kube-apiserver answers 415):
    their kind_key is unknown here.
    """
    schema = schema_for(kind_key)
    if schema is None:
        raise PatchError(
            f"strategic merge patch is not supported for {kind_key!r}; it is for the built-in kinds "
            f"{', '.join(known_kinds())} (use a merge patch or a JSON patch)"
        )
    _require_document(document)
    _check_json(patch, "")
    if not isinstance(patch, dict):
        raise PatchError(f"a strategic merge patch must be a JSON object, got a {_json_kind(patch)}")
    return _merge_map(copy.deepcopy(document), patch, schema, "")


def _merge_map(original: dict[str, Any], patch: dict[str, Any], schema: Schema, where: str) -> dict[str, Any]:
    """Merge `patch` into `original` (owned by the caller, changed in place); `patch` is only read."""
    if _PATCH in patch:
        directive = patch[_PATCH]
        if directive == "replace":
            rest = {key: value for key, value in patch.items() if key != _PATCH}
            return _merge_map({}, rest, schema, where)
        if directive == "delete":
            return {}
        if directive == "merge":
            raise PatchError(
                f"{_at(where)}: '$patch: merge' is not accepted in a map (kube-apiserver rejects it too); "
                "maps merge by default, leave the directive out"
            )
        raise PatchError(
            f"{_at(where)}: unknown $patch directive {_show(directive)}; expected replace or delete"
        )
    _apply_retain_keys(original, patch, where)
    ordered = _apply_element_orders(original, patch, schema, where)
    # Deletions before additions, so an item both deleted and added stays (upstream's order is random here).
    for key, value in patch.items():
        if key.startswith(_DELETE_FROM):
            here = _pointer(where, key)
            _delete_from_primitive_list(original, key[len(_DELETE_FROM) :], value, schema, here)
    for key, value in patch.items():
        here = _pointer(where, key)
        if key in ordered or key == _RETAIN_KEYS or key.startswith((_SET_ORDER, _DELETE_FROM)):
            continue
        if key.startswith("$"):
            raise PatchError(
                f"{_at(here)}: unknown directive {key!r}; known: $patch, $retainKeys, "
                "$deleteFromPrimitiveList/<field>, $setElementOrder/<field>"
            )
        if value is None:
            original.pop(key, None)
            continue
        rule = schema.field(key)
        current = original.get(key, _MISSING)
        if isinstance(value, dict) and isinstance(current, dict):
            original[key] = _merge_map(current, value, rule.schema, here)
        elif isinstance(value, list) and isinstance(current, list) and rule.merge is not None:
            original[key] = _merge_list(current, value, rule, here)
        else:
            original[key] = _fresh(value, rule, here)
    return original


def _fresh(value: Any, rule: FieldRule, where: str) -> Any:
    """A patch value with nothing to merge into: maps lose nulls and directives, as the server keeps it."""
    if isinstance(value, dict):
        return _merge_map({}, value, rule.schema, where)
    if isinstance(value, list):
        if rule.merge is not None:
            return _merge_list([], value, rule, where)
        items = []
        for index, item in enumerate(value):
            if isinstance(item, dict) and _PATCH in item:
                raise PatchError(
                    f"{_at(_pointer(where, index))}: $patch in a list that is replaced whole (it has no "
                    "patchStrategy merge)"
                )
            items.append(_fresh(item, FieldRule(schema=rule.schema), _pointer(where, index)))
        return items
    return value


def _apply_retain_keys(original: dict[str, Any], patch: dict[str, Any], where: str) -> None:
    """`$retainKeys`: drop the keys of `original` the list does not name (kubectl: volume sources)."""
    if _RETAIN_KEYS not in patch:
        return
    here = _pointer(where, _RETAIN_KEYS)
    keep = patch[_RETAIN_KEYS]
    if not isinstance(keep, list) or not all(isinstance(name, str) for name in keep):
        raise PatchError(f"{_at(here)}: $retainKeys must be a list of field names, got {_show(keep)}")
    for key, value in patch.items():
        if value is None or key == _RETAIN_KEYS or key.startswith((_DELETE_FROM, _SET_ORDER)):
            continue
        if key not in keep:
            raise PatchError(f"{_at(here)}: the patch sets {key!r}, which its $retainKeys list does not name")
    for key in [key for key in original if key not in keep]:
        del original[key]


def _merged_list_rule(schema: Schema, name: str, directive: str, where: str) -> ListMerge:
    if not name:
        raise PatchError(f"{_at(where)}: {directive} names no field")
    merge = schema.field(name).merge
    if merge is None:
        raise PatchError(
            f"{_at(where)}: {name!r} is not a list with patchStrategy merge, so it takes no {directive}"
        )
    return merge


def _stored_list(original: dict[str, Any], name: str, where: str) -> Any:
    current = original.get(name, _MISSING)
    if current is not _MISSING and not isinstance(current, list):
        raise PatchError(f"{_at(where)}: the object's {name!r} is a {_json_kind(current)}, not a list")
    return current


def _delete_from_primitive_list(
    original: dict[str, Any], name: str, value: Any, schema: Schema, where: str
) -> None:
    """`$deleteFromPrimitiveList/<field>`: remove these scalars from a set-merged list (e.g. finalizers)."""
    merge = _merged_list_rule(schema, name, "$deleteFromPrimitiveList", where)
    if merge.key is not None:
        raise PatchError(
            f"{_at(where)}: {name!r} is a list of objects merged by {merge.key!r}, not of scalars"
        )
    if not isinstance(value, list):
        raise PatchError(f"{_at(where)}: $deleteFromPrimitiveList needs a list, got {_show(value)}")
    current = _stored_list(original, name, where)
    if current is _MISSING:
        return
    _element_kind(current + value, where)
    original[name] = [item for item in current if not any(_json_equal(item, gone) for gone in value)]


def _apply_element_orders(
    original: dict[str, Any], patch: dict[str, Any], schema: Schema, where: str
) -> set[str]:
    """`$setElementOrder/<field>`: merge that list, then order it as given (then the server-only items).

    Returns the fields merged here, which the caller must not merge again.
    """
    done: set[str] = set()
    for key, order in patch.items():
        if not key.startswith(_SET_ORDER):
            continue
        here = _pointer(where, key)
        name = key[len(_SET_ORDER) :]
        merge = _merged_list_rule(schema, name, "$setElementOrder", here)
        if not isinstance(order, list):
            raise PatchError(f"{_at(here)}: $setElementOrder needs a list, got {_show(order)}")
        field_where = _pointer(where, name)
        incoming = patch.get(name, _MISSING)
        if incoming is not _MISSING and not isinstance(incoming, list):
            raise PatchError(
                f"{_at(field_where)}: a list with $setElementOrder must be a list, got {_show(incoming)}"
            )
        current = _stored_list(original, name, field_where)
        if merge.key is not None:
            _require_merge_keys(order, merge.key, here)
        if incoming is not _MISSING:
            _check_order_agrees(incoming, order, merge.key, field_where, here)
        if current is _MISSING and incoming is _MISSING:
            continue
        rule = schema.field(name)
        if incoming is _MISSING:
            merged = current
        else:
            merged = _merge_list([] if current is _MISSING else current, incoming, rule, field_where)
        patch_items, server_only = _split(merged, order, merge.key, field_where)
        if current is _MISSING:
            server_order = []
        elif incoming is _MISSING or merge.key is None:
            server_order = current
        else:
            server_order = _stored_order_as_upstream_reads_it(current, incoming, merge.key)
        original[name] = _order(patch_items, server_only, order, server_order, merge.key)
        done.add(name)
    return done


def _stored_order_as_upstream_reads_it(current: list[Any], patch_list: list[Any], key: str) -> list[Any]:
    """The stored list as upstream's $setElementOrder step reads it, to place the server-only items alike.

    Upstream reads the stored order through a Go slice that the list merge just changed in place: each
    `$patch: delete` shifted the later items left, and new items were appended into the freed slots. Replaying
    that keeps the order of kubectl apply's results as kube-apiserver's (checked against kubectl patch).
    """
    slots = list(current)
    length = len(slots)
    plain = []
    replace = False
    for item in patch_list:
        directive = item.get(_PATCH) if isinstance(item, dict) else None
        if directive == "delete":
            while (found := _position(slots[:length], item, key)) >= 0:
                slots[found : length - 1] = slots[found + 1 : length]
                length -= 1
        elif directive == "replace":
            replace = True
        elif directive is None:
            plain.append(item)
    for item in [] if replace else plain:
        if _position(slots[:length], item, key) >= 0:
            continue  # merged into the item in place
        if length == len(slots):
            break  # the Go slice grows into a new array: the stored one is no longer written
        slots[length] = item
        length += 1
    return slots


def _check_order_agrees(
    patch_list: list[Any], order: list[Any], key: str | None, where: str, order_where: str
) -> None:
    """The patch list's items (deletions aside) must appear in $setElementOrder, in the same order."""
    if not order:
        return  # upstream checks nothing against an empty order list
    pending = [item for item in patch_list if not (isinstance(item, dict) and _PATCH in item)]
    position = 0
    for item in pending:
        while position < len(order) and not _same_item(item, order[position], key):
            position += 1
        if position == len(order):
            raise PatchError(
                f"{_at(where)}: item {_show(_identity(item, key))} is missing from {order_where!r} "
                "or out of its order"
            )
        position += 1


def _element_kind(items: list[Any], where: str) -> str:
    kinds = {_json_kind(item) for item in items}
    if "array" in kinds:
        raise PatchError(f"{_at(where)}: lists of lists cannot be merged")
    if len(kinds) > 1:
        raise PatchError(f"{_at(where)}: the list mixes item types ({', '.join(sorted(kinds))})")
    return kinds.pop() if kinds else "object"


def _merge_list(original: list[Any], patch: list[Any], rule: FieldRule, where: str) -> list[Any]:
    """Merge a patch list into a stored list with patchStrategy merge; `original`'s items are owned."""
    merge = rule.merge
    assert merge is not None  # callers only merge lists the schema marks as merged
    if not original and not patch:
        return []
    kind = _element_kind(original + patch, where)
    if kind != "object":
        if merge.key is not None:
            raise PatchError(
                f"{_at(where)}: a list merged by {merge.key!r} must hold objects, it holds {kind}s"
            )
        merged = _dedupe(original + patch)
        patch_items, server_only = _split(merged, patch, None, where)
        return _order(patch_items, server_only, patch, original, None)
    if merge.key is None:
        raise PatchError(f"{_at(where)}: a list merged as a set must hold scalars, it holds objects")
    key = merge.key
    work = list(original)
    plain: list[tuple[int, dict[str, Any]]] = []
    replace = False
    for index, item in enumerate(patch):
        if _PATCH not in item:
            plain.append((index, item))
            continue
        here = _pointer(where, index)
        directive = item[_PATCH]
        if directive == "delete":
            if key not in item:
                raise PatchError(f"{_at(here)}: '$patch: delete' needs the merge key {key!r}")
            work = [kept for kept in work if not (key in kept and _json_equal(kept[key], item[key]))]
        elif directive == "replace":
            replace = True
        elif directive == "merge":
            raise PatchError(
                f"{_at(here)}: '$patch: merge' is not supported in a list (nor by kube-apiserver)"
            )
        else:
            raise PatchError(
                f"{_at(here)}: unknown $patch directive {_show(directive)}; expected delete or replace"
            )
    if replace:
        return [_merge_map({}, item, rule.schema, _pointer(where, index)) for index, item in plain]
    server_order = list(work)
    for index, item in plain:
        here = _pointer(where, index)
        if key not in item:
            raise PatchError(f"{_at(here)}: list item has no merge key {key!r}")
        found = next(
            (n for n, kept in enumerate(work) if key in kept and _json_equal(kept[key], item[key])),
            None,
        )
        if found is None:
            work.append(_merge_map({}, item, rule.schema, here))
        else:
            work[found] = _merge_map(work[found], item, rule.schema, here)
    patch_order = [item for _, item in plain]
    patch_items, server_only = _split(work, patch_order, key, where)
    return _order(patch_items, server_only, patch_order, server_order, key)


def _dedupe(items: list[Any]) -> list[Any]:
    unique: list[Any] = []
    for item in items:
        if not any(_json_equal(item, seen) for seen in unique):
            unique.append(item)
    return unique


def _identity(item: Any, key: str | None) -> Any:
    return item.get(key) if key is not None and isinstance(item, dict) else item


def _same_item(left: Any, right: Any, key: str | None) -> bool:
    if key is None:
        return _json_equal(left, right)
    return isinstance(left, dict) and isinstance(right, dict) and _json_equal(left.get(key), right.get(key))


def _position(items: list[Any], item: Any, key: str | None) -> int:
    return next((n for n, candidate in enumerate(items) if _same_item(candidate, item, key)), -1)


def _require_merge_keys(items: list[Any], key: str, where: str) -> None:
    for index, item in enumerate(items):
        if not isinstance(item, dict) or key not in item:
            raise PatchError(f"{_at(_pointer(where, index))}: item {_show(item)} has no merge key {key!r}")


def _split(merged: list[Any], by: list[Any], key: str | None, where: str) -> tuple[list[Any], list[Any]]:
    """Items of `merged` that `by` names, and the others (the server-only items)."""
    if key is not None:
        _require_merge_keys(merged, key, where)
    named = [item for item in merged if _position(by, item, key) >= 0]
    others = [item for item in merged if _position(by, item, key) < 0]
    return named, others


def _order(
    patch_items: list[Any],
    server_only: list[Any],
    patch_order: list[Any],
    server_order: list[Any],
    key: str | None,
) -> list[Any]:
    """Interleave the patch's items (patch order) with the server-only items (stored order), as upstream does.

    A server-only item goes before the next patch item only when both are in the stored list and it came first
    there; so new items land before the remaining server-only items unless $setElementOrder says otherwise.
    """
    left = sorted(server_only, key=lambda item: _rank(server_order, item, key))
    right = sorted(patch_items, key=lambda item: _rank(patch_order, item, key))
    result: list[Any] = []
    i = j = 0
    while i < len(left) and j < len(right):
        li, ri = _position(server_order, left[i], key), _position(server_order, right[j], key)
        if li >= 0 and ri >= 0 and li < ri:
            result.append(left[i])
            i += 1
        else:
            result.append(right[j])
            j += 1
    return result + left[i:] + right[j:]


def _rank(order: list[Any], item: Any, key: str | None) -> int:
    position = _position(order, item, key)
    return position if position >= 0 else len(order)
