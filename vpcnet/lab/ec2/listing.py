"""Describe* listings as EC2 does them: filters (every filter must match, any of its values, with * and ?
wildcards; tag:KEY, tag-key, tag-value for every resource), lookups by ID, and MaxResults/NextToken pages."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any, TypeVar

from vpcnet.lab.ec2.errors import Ec2Error, invalid_value, not_found

T = TypeVar("T")

Fields = dict[str, list[str]]


def matches(
    fields: Fields, tags: Mapping[str, str], filters: Sequence[Mapping[str, Any]], known: frozenset[str]
) -> bool:
    """EC2 semantics: every filter must match; within a filter any value (with * and ? wildcards)."""
    for f in filters:
        name = str(f.get("Name", ""))
        wanted = [str(v) for v in f.get("Values", [])]
        if name.startswith("tag:"):
            have = [tags[name[4:]]] if name[4:] in tags else []
        elif name == "tag-key":
            have = list(tags)
        elif name == "tag-value":
            have = list(tags.values())
        elif name in known:
            have = fields.get(name, [])
        else:
            raise invalid_value(f"The filter '{name}' is invalid")
        if not any(fnmatchcase(h, w) for h in have for w in wanted):
            return False
    return True


def check_filters(filters: Sequence[Mapping[str, Any]], known: frozenset[str]) -> None:
    for f in filters:
        name = str(f.get("Name", ""))
        if not name:
            raise Ec2Error("MissingParameter", "A filter needs a Name")
        if not (name.startswith("tag:") or name in ("tag-key", "tag-value") or name in known):
            raise invalid_value(f"The filter '{name}' is invalid")


def paginate(
    items: Sequence[T],
    seq_of: Callable[[T], int],
    params: Mapping[str, Any],
    ids_given: bool,
    kind: str,
    bounds: tuple[int, int],
) -> tuple[list[T], str | None]:
    """MaxResults/NextToken as EC2: MaxResults within bounds and not with explicit IDs; the token is opaque
    (here: the sequence number of the last item given, so pages stay correct while the state changes)."""
    max_results = params.get("MaxResults")
    token = params.get("NextToken")
    if max_results is not None and ids_given:
        raise Ec2Error(
            "InvalidParameterCombination", f"The parameter MaxResults cannot be used with {kind} IDs"
        )
    after = 0
    if token:
        try:
            tkind, _, seq = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
            after = int(seq)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            tkind = ""
        if tkind != kind:
            raise Ec2Error("InvalidPaginationToken", f"The pagination token {token!r} is invalid")
    rest = [i for i in items if seq_of(i) > after]
    if max_results is None:
        return rest, None
    lo, hi = bounds
    if not lo <= max_results <= hi:
        raise invalid_value(
            f"Value ( {max_results} ) for parameter maxResults is invalid. "
            f"Expected a value between {lo} and {hi}."
        )
    page = rest[:max_results]
    if len(rest) > max_results:
        return page, base64.urlsafe_b64encode(f"{kind}:{seq_of(page[-1])}".encode()).decode()
    return page, None


def by_ids(items: Sequence[T], id_of: Callable[[T], str], ids: Sequence[str], kind: str) -> list[T]:
    if not ids:
        return list(items)
    index = {id_of(i): i for i in items}
    for ident in ids:
        if ident not in index:
            raise not_found(kind, ident)
    wanted = set(ids)
    return [i for i in items if id_of(i) in wanted]
