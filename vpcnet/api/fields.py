"""Reading untyped YAML data into typed values while collecting faults with their field paths.

Every reader takes a `Ctx` (where faults go) and a path; on a fault it records it and returns a
neutral value so that validation can continue and report every problem at once.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vpcnet.api.errors import Fault

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


QUOTE_LIMIT = 64


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """A value as error messages show it: repr() of at most `limit` characters, so that a 20 MB value in a
    manifest does not come back whole in the error; the size says how much was left out."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        size = len(value.encode("utf-8", "surrogatepass"))
        return f"{value[:limit]!r}… ({size} bytes)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def reason(exc: Exception) -> str:
    """A parser's exception message, which may quote (part of) the bad value whole: cut like `quote`."""
    text = str(exc)
    return text if len(text) <= 2 * QUOTE_LIMIT else f"{text[: 2 * QUOTE_LIMIT]}… ({len(text)} characters)"


@dataclass
class Ctx:
    """Where faults of one document are collected."""

    document: str
    faults: list[Fault] = field(default_factory=list)

    def fault(self, path: str, message: str) -> None:
        self.faults.append(Fault(self.document, path, message))


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if len(key) > QUOTE_LIMIT:  # a huge key is shown like a huge value
        key = quote(key)
    return f"{path}.{key}" if path else key


def as_mapping(ctx: Ctx, value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        ctx.fault(path, f"must be a mapping, got {_type_name(value)}")
        return {}
    bad = [k for k in value if not isinstance(k, str)]
    for k in bad:
        ctx.fault(path, f"key {quote(k)} must be a string")
    return {k: v for k, v in value.items() if isinstance(k, str)}


def as_list(ctx: Ctx, value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        ctx.fault(path, f"must be a list, got {_type_name(value)}")
        return []
    return value


def ascii_decimal(text: str) -> int | None:
    """`text` as a non-negative integer if it is written in ASCII digits, else None. str.isdigit() alone
    would pass '²' (which int() refuses) and a 5,000-digit string (which int() refuses too); such a number
    is larger than any field takes, so it reads as 10**18 and fails the caller's range check."""
    if not (text.isascii() and text.isdigit()):
        return None
    return int(text) if len(text) <= 18 else 10**18


def check_known(ctx: Ctx, data: Mapping[str, Any], path: str, known: tuple[str, ...]) -> None:
    for key in data:
        if key not in known:
            ctx.fault(join(path, key), f"unknown field (known fields: {', '.join(known)})")


def opt_str(ctx: Ctx, data: Mapping[str, Any], key: str, path: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        ctx.fault(join(path, key), f"must be a string, got {_type_name(value)}")
        return None
    return value


def opt_int(ctx: Ctx, data: Mapping[str, Any], key: str, path: str, lo: int, hi: int) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        ctx.fault(join(path, key), f"must be an integer, got {_type_name(value)}")
        return None
    if not lo <= value <= hi:
        ctx.fault(join(path, key), f"must be between {lo} and {hi} inclusive, got {quote(value)}")
        return None
    return value


def opt_float(ctx: Ctx, data: Mapping[str, Any], key: str, path: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        ctx.fault(join(path, key), f"must be a number, got {_type_name(value)}")
        return None
    # NaN and infinity (YAML .nan, .inf; huge integers overflow to it) have no order: refused.
    number = float(value) if isinstance(value, float) or abs(value) < 2**1023 else math.inf
    if not math.isfinite(number):
        ctx.fault(join(path, key), f"must be a finite number, got {_type_name(value)}")
        return None
    return number


def opt_bool(ctx: Ctx, data: Mapping[str, Any], key: str, path: str) -> bool | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        ctx.fault(join(path, key), f"must be true or false, got {_type_name(value)}")
        return None
    return value


def str_list(ctx: Ctx, data: Mapping[str, Any], key: str, path: str) -> list[str]:
    out: list[str] = []
    for i, item in enumerate(as_list(ctx, data.get(key), join(path, key))):
        if not isinstance(item, str):
            ctx.fault(join(join(path, key), i), f"must be a string, got {_type_name(item)}")
        else:
            out.append(item)
    return out


def labels_map(ctx: Ctx, data: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
    """A Kubernetes label map: qualified-name keys, label-value values (numbers are rejected)."""
    out: dict[str, str] = {}
    p = join(path, key)
    for k, v in as_mapping(ctx, data.get(key), p).items():
        kp = join(p, k)
        problem = label_key_problem(k)
        if problem:
            ctx.fault(kp, problem)
            continue
        if not isinstance(v, str):
            ctx.fault(kp, f"label value must be a string, got {_type_name(v)}")
            continue
        problem = label_value_problem(v)
        if problem:
            ctx.fault(kp, problem)
            continue
        out[k] = v
    return out


def string_map(ctx: Ctx, data: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    p = join(path, key)
    for k, v in as_mapping(ctx, data.get(key), p).items():
        if not isinstance(v, str):
            ctx.fault(join(p, k), f"must be a string, got {_type_name(v)}")
        else:
            out[k] = v
    return out


def label_key_problem(key: str) -> str | None:
    """apimachinery IsQualifiedName: optional DNS-subdomain prefix and '/', then a 63-char name."""
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            return f"invalid label key {quote(key)}: prefix part must be non-empty"
        if len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix):
            return f"invalid label key {quote(key)}: prefix part must be a DNS subdomain"
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return (
            f"invalid label key {quote(key)}: name part must be at most 63 characters of alphanumerics, "
            "'-', '_' or '.', starting and ending with an alphanumeric"
        )
    return None


def label_value_problem(value: str) -> str | None:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        return (
            f"invalid label value {quote(value)}: at most 63 characters of alphanumerics, '-', '_' or '.', "
            "starting and ending with an alphanumeric (or empty)"
        )
    return None


def dns_label_problem(name: str) -> str | None:
    if len(name) > 63 or not _DNS1123_LABEL.match(name):
        return (
            f"{quote(name)} is not a valid DNS-1123 label (lowercase alphanumerics and '-', "
            "starting and ending with an alphanumeric, at most 63 characters)"
        )
    return None


def dns_subdomain_problem(name: str) -> str | None:
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        return (
            f"{quote(name)} is not a valid DNS-1123 subdomain (lowercase alphanumerics, '-' and '.', "
            "at most 253 characters)"
        )
    return None


def port_name_problem(name: str) -> str | None:
    """IANA_SVC_NAME: 1-15 lowercase alphanumerics or '-', at least one letter, no '--', no edge '-'."""
    if not 1 <= len(name) <= 15:
        return f"port name {quote(name)} must be 1-15 characters"
    if not _IANA_SVC_NAME.match(name):
        return (
            f"port name {quote(name)} must be lowercase alphanumerics and '-', "
            "not starting or ending with '-'"
        )
    if "--" in name:
        return f"port name {quote(name)} must not contain '--'"
    if not any(c.isalpha() for c in name):
        return f"port name {quote(name)} must contain at least one letter"
    return None


def parse_cidr(ctx: Ctx, value: Any, path: str, *, strict: bool = False) -> IPNetwork | None:
    """A CIDR; host bits are masked off (Kubernetes accepts them) unless `strict`."""
    if not isinstance(value, str):
        ctx.fault(path, f"must be a CIDR string, got {_type_name(value)}")
        return None
    text = value if "/" in value else None
    if text is None:
        ctx.fault(path, f"invalid CIDR {quote(value)}: missing /prefix-length")
        return None
    try:
        net = ipaddress.ip_network(text, strict=strict)
    except ValueError as exc:
        ctx.fault(path, f"invalid CIDR {quote(value)}: {reason(exc)}")
        return None
    return net


def parse_ip(ctx: Ctx, value: Any, path: str) -> IPAddress | None:
    if not isinstance(value, str):
        ctx.fault(path, f"must be an IP address string, got {_type_name(value)}")
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        ctx.fault(path, f"invalid IP address {quote(value)}")
        return None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"a number ({quote(value)})"
    if isinstance(value, str):
        return f"a string ({quote(value)})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__
