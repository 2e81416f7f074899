"""The Calico selector language: parse, print in canonical form, evaluate.

Grammar (Calico's, written from its documentation and parser behaviour)::

    or   := and ('||' and)*
    and  := op ('&&' op)*
    op   := '!'* ( 'has(' LABEL ')' | 'all()' | 'global()'
                 | LABEL ('==' | '!=' | 'contains' | 'starts with' | 'ends with') STRING
                 | LABEL ('in' | 'not in') '{' [STRING (',' STRING)* [',']] '}'
                 | '(' or ')' )

Whitespace is space or tab only. Strings are quoted with ``"`` or ``'`` and have no escapes.
Labels are ``[a-zA-Z0-9_./-]{1,512}``. A run of ``!`` collapses to one negation or none.
An empty selector means ``all()``.

Semantics: ``==``, ``in``, ``contains``, ``starts with``, ``ends with`` and ``has()`` need the label
present; ``!=`` and ``not in`` are true when the label is absent; ``all()`` and ``global()`` are true
(``global()`` gets its meaning from the namespace-selector rewrite in vpcnet.policy.compile).

The canonical form (``str(selector)``) is Calico's: ``a == "b"``, ``(x && y)``, ``(x || y)``, ``!x``,
``a in {"a", "b"}`` (set literals sorted and de-duplicated). The unique id (``uid``) is Calico's
``"s:" + base64url(sha224("s:" + canonical))``, so ipset names derived from it match Felix's.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property

Labels = Mapping[str, str]
Matcher = Callable[[Labels], bool]

MAX_LABEL_LENGTH = 512
# Parentheses nest by recursion; real selectors nest a few levels, and a bound keeps 5,000 of them an error
# message instead of a RecursionError.
MAX_NESTING = 100
_DESCRIBE_LIMIT = 64
_WHITESPACE = " \t"
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-")


class SelectorError(ValueError):
    """An invalid selector; `position` is the 0-based character offset of the fault."""

    def __init__(self, selector: str, position: int, message: str) -> None:
        self.selector = selector
        self.position = position
        self.message = message
        super().__init__(f"{message} at position {position}")

    def pointer(self) -> str:
        """The selector with a caret under the fault, for terminals."""
        return f"{self.selector}\n{' ' * self.position}^"


# --------------------------------------------------------------------------------------------------
# AST


def _quote(value: str) -> str:
    return f"'{value}'" if '"' in value else f'"{value}"'


class Node:
    """A selector expression node. Subclasses are frozen dataclasses; equality is structural."""

    def matches(self, labels: Labels) -> bool:
        raise NotImplementedError

    def compile(self) -> Matcher:
        """A closure equivalent to `matches`, without per-call dispatch on node type."""
        raise NotImplementedError

    def map_labels(self, fn: Callable[[str], str]) -> Node:
        """The same expression with every label name passed through `fn` (used for pcns. prefixes)."""
        return self

    def labels_used(self) -> frozenset[str]:
        return frozenset()


@dataclass(frozen=True)
class All(Node):
    def matches(self, labels: Labels) -> bool:
        return True

    def compile(self) -> Matcher:
        return lambda labels: True

    def __str__(self) -> str:
        return "all()"


@dataclass(frozen=True)
class Global(Node):
    def matches(self, labels: Labels) -> bool:
        return True

    def compile(self) -> Matcher:
        return lambda labels: True

    def __str__(self) -> str:
        return "global()"


@dataclass(frozen=True)
class Has(Node):
    label: str

    def matches(self, labels: Labels) -> bool:
        return self.label in labels

    def compile(self) -> Matcher:
        label = self.label
        return lambda labels: label in labels

    def map_labels(self, fn: Callable[[str], str]) -> Node:
        return Has(fn(self.label))

    def labels_used(self) -> frozenset[str]:
        return frozenset((self.label,))

    def __str__(self) -> str:
        return f"has({self.label})"


@dataclass(frozen=True)
class Compare(Node):
    """label OP "value" for ==, !=, contains, starts with, ends with."""

    label: str
    op: str
    value: str

    def matches(self, labels: Labels) -> bool:
        return self.compile()(labels)

    def compile(self) -> Matcher:
        label, value = self.label, self.value
        if self.op == "==":
            return lambda labels: labels.get(label) == value
        if self.op == "!=":
            return lambda labels: labels.get(label) != value  # absent label: None != value -> True
        if self.op == "contains":
            return lambda labels: label in labels and value in labels[label]
        if self.op == "starts with":
            return lambda labels: label in labels and labels[label].startswith(value)
        if self.op == "ends with":
            return lambda labels: label in labels and labels[label].endswith(value)
        raise AssertionError(self.op)

    def map_labels(self, fn: Callable[[str], str]) -> Node:
        return Compare(fn(self.label), self.op, self.value)

    def labels_used(self) -> frozenset[str]:
        return frozenset((self.label,))

    def __str__(self) -> str:
        return f"{self.label} {self.op} {_quote(self.value)}"


@dataclass(frozen=True)
class InSet(Node):
    """label in {...} (negated=False) or label not in {...} (negated=True); values sorted, unique."""

    label: str
    values: tuple[str, ...]
    negated: bool = False

    def matches(self, labels: Labels) -> bool:
        return self.compile()(labels)

    def compile(self) -> Matcher:
        label, values = self.label, frozenset(self.values)
        if self.negated:
            return lambda labels: labels.get(label) not in values if label in labels else True
        return lambda labels: label in labels and labels[label] in values

    def map_labels(self, fn: Callable[[str], str]) -> Node:
        return InSet(fn(self.label), self.values, self.negated)

    def labels_used(self) -> frozenset[str]:
        return frozenset((self.label,))

    def __str__(self) -> str:
        op = "not in" if self.negated else "in"
        return f"{self.label} {op} {{{', '.join(_quote(v) for v in self.values)}}}"


@dataclass(frozen=True)
class Not(Node):
    operand: Node

    def matches(self, labels: Labels) -> bool:
        return not self.operand.matches(labels)

    def compile(self) -> Matcher:
        inner = self.operand.compile()
        return lambda labels: not inner(labels)

    def map_labels(self, fn: Callable[[str], str]) -> Node:
        return Not(self.operand.map_labels(fn))

    def labels_used(self) -> frozenset[str]:
        return self.operand.labels_used()

    def __str__(self) -> str:
        return f"!{self.operand}"


@dataclass(frozen=True)
class And(Node):
    operands: tuple[Node, ...]

    def matches(self, labels: Labels) -> bool:
        return all(op.matches(labels) for op in self.operands)

    def compile(self) -> Matcher:
        inner = tuple(op.compile() for op in self.operands)
        if len(inner) == 2:
            a, b = inner
            return lambda labels: a(labels) and b(labels)
        return lambda labels: all(m(labels) for m in inner)

    def map_labels(self, fn: Callable[[str], str]) -> Node:
        return And(tuple(op.map_labels(fn) for op in self.operands))

    def labels_used(self) -> frozenset[str]:
        return frozenset().union(*(op.labels_used() for op in self.operands))

    def __str__(self) -> str:
        return "(" + " && ".join(str(op) for op in self.operands) + ")"


@dataclass(frozen=True)
class Or(Node):
    operands: tuple[Node, ...]

    def matches(self, labels: Labels) -> bool:
        return any(op.matches(labels) for op in self.operands)

    def compile(self) -> Matcher:
        inner = tuple(op.compile() for op in self.operands)
        return lambda labels: any(m(labels) for m in inner)

    def map_labels(self, fn: Callable[[str], str]) -> Node:
        return Or(tuple(op.map_labels(fn) for op in self.operands))

    def labels_used(self) -> frozenset[str]:
        return frozenset().union(*(op.labels_used() for op in self.operands))

    def __str__(self) -> str:
        return "(" + " || ".join(str(op) for op in self.operands) + ")"


@dataclass(frozen=True)
class Selector:
    """A parsed selector: its tree, canonical text and unique id."""

    root: Node

    @cached_property
    def canonical(self) -> str:
        return str(self.root)

    @cached_property
    def uid(self) -> str:
        digest = hashlib.sha224(b"s:" + self.canonical.encode()).digest()
        return "s:" + base64.urlsafe_b64encode(digest).decode().rstrip("=")

    @cached_property
    def matcher(self) -> Matcher:
        return self.root.compile()

    def matches(self, labels: Labels) -> bool:
        return self.matcher(labels)

    def __str__(self) -> str:
        return self.canonical


def and_all(*nodes: Node) -> Node:
    """Conjunction of `nodes`, dropping all() terms (all() alone if nothing else is left)."""
    kept = tuple(n for n in nodes if not isinstance(n, All))
    if not kept:
        return All()
    if len(kept) == 1:
        return kept[0]
    return And(kept)


# --------------------------------------------------------------------------------------------------
# Tokenizer


@dataclass(frozen=True)
class _Tok:
    kind: str  # "label", "string", "(", ")", "{", "}", ",", "==", "!=", "!", "&&", "||",
    # "in", "not in", "contains", "starts with", "ends with", "has", "all", "global", "eof"
    value: str
    pos: int


_LABEL_OPERATORS = (
    ("contains", ()),
    ("starts", ("with",)),
    ("ends", ("with",)),
    ("not", ("in",)),
    ("in", ()),
)


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WHITESPACE:
        i += 1
    return i


def _read_label(text: str, i: int) -> int:
    j = i
    while j < len(text) and text[j] in _LABEL_CHARS:
        j += 1
    return j


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i = 0
    n = len(text)
    while True:
        i = _skip_ws(text, i)
        if i >= n:
            toks.append(_Tok("eof", "", i))
            return toks
        c = text[i]
        start = i
        if c in "(){},":
            toks.append(_Tok(c, c, i))
            i += 1
        elif c in "\"'":
            end = text.find(c, i + 1)
            if end < 0:
                raise SelectorError(text, i, "unterminated string")
            toks.append(_Tok("string", text[i + 1 : end], i))
            i = end + 1
        elif c == "=":
            if text.startswith("==", i):
                toks.append(_Tok("==", "==", i))
                i += 2
            else:
                raise SelectorError(text, i, "expected ==")
        elif c == "!":
            if text.startswith("!=", i):
                toks.append(_Tok("!=", "!=", i))
                i += 2
            else:
                toks.append(_Tok("!", "!", i))
                i += 1
        elif c == "&":
            if not text.startswith("&&", i):
                raise SelectorError(text, i, "expected &&")
            toks.append(_Tok("&&", "&&", i))
            i += 2
        elif c == "|":
            if not text.startswith("||", i):
                raise SelectorError(text, i, "expected ||")
            toks.append(_Tok("||", "||", i))
            i += 2
        elif toks and toks[-1].kind == "label":
            # Right after a label only an operator word may follow.
            for first, rest in _LABEL_OPERATORS:
                if text.startswith(first, i):
                    j = i + len(first)
                    ok = True
                    for word in rest:
                        j = _skip_ws(text, j)
                        if not text.startswith(word, j):
                            ok = False
                            break
                        j += len(word)
                    if ok:
                        kind = " ".join((first, *rest))
                        toks.append(_Tok(kind, kind, start))
                        i = j
                        break
                    raise SelectorError(text, i, f"expected an operator after label '{toks[-1].value}'")
            else:
                raise SelectorError(text, i, f"expected an operator after label '{toks[-1].value}'")
        elif text.startswith("has(", i):
            j = _skip_ws(text, i + 4)
            k = _read_label(text, j)
            if k == j:
                raise SelectorError(text, j, "expected a label name in has(")
            if k - j > MAX_LABEL_LENGTH:
                raise SelectorError(text, j, f"label longer than {MAX_LABEL_LENGTH} characters")
            m = _skip_ws(text, k)
            if not text.startswith(")", m):
                raise SelectorError(text, m, "expected ) to close has(")
            toks.append(_Tok("has", text[j:k], start))
            i = m + 1
        elif text.startswith("all(", i) or text.startswith("global(", i):
            word = "all" if text.startswith("all(", i) else "global"
            j = _skip_ws(text, i + len(word) + 1)
            if not text.startswith(")", j):
                raise SelectorError(text, j, f"expected ) to close {word}(")
            toks.append(_Tok(word, word, start))
            i = j + 1
        else:
            j = _read_label(text, i)
            if j == i:
                raise SelectorError(text, i, f"unexpected character {c!r}")
            if j - i > MAX_LABEL_LENGTH:
                raise SelectorError(text, i, f"label longer than {MAX_LABEL_LENGTH} characters")
            toks.append(_Tok("label", text[i:j], i))
            i = j


# --------------------------------------------------------------------------------------------------
# Parser


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def fail(self, tok: _Tok, message: str) -> SelectorError:
        return SelectorError(self.text, tok.pos, message)

    def parse(self) -> Node:
        if self.peek().kind == "eof":
            return All()
        node = self.parse_or()
        tok = self.peek()
        if tok.kind != "eof":
            raise self.fail(tok, f"unexpected {_describe(tok)} after a complete expression")
        return node

    def parse_or(self) -> Node:
        parts = [self.parse_and()]
        while self.peek().kind == "||":
            self.take()
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def parse_and(self) -> Node:
        parts = [self.parse_op()]
        while self.peek().kind == "&&":
            self.take()
            parts.append(self.parse_op())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def parse_op(self) -> Node:
        negated = False
        while self.peek().kind == "!":
            self.take()
            negated = not negated
        tok = self.take()
        node: Node
        if tok.kind == "has":
            node = Has(tok.value)
        elif tok.kind == "all":
            node = All()
        elif tok.kind == "global":
            node = Global()
        elif tok.kind == "(":
            if self.depth >= MAX_NESTING:
                raise self.fail(tok, f"parentheses nested deeper than {MAX_NESTING} levels")
            self.depth += 1
            node = self.parse_or()
            self.depth -= 1
            close = self.take()
            if close.kind != ")":
                raise self.fail(close, f"expected ) but found {_describe(close)}")
        elif tok.kind == "label":
            node = self.parse_label_op(tok)
        else:
            raise self.fail(tok, f"expected an expression but found {_describe(tok)}")
        return Not(node) if negated else node

    def parse_label_op(self, label: _Tok) -> Node:
        op = self.take()
        if op.kind in ("==", "!=", "contains", "starts with", "ends with"):
            value = self.take()
            if value.kind != "string":
                raise self.fail(value, f"expected a quoted string after {op.kind}")
            return Compare(label.value, op.kind, value.value)
        if op.kind in ("in", "not in"):
            brace = self.take()
            if brace.kind != "{":
                raise self.fail(brace, f"expected {{ after {op.kind}")
            values: set[str] = set()
            while self.peek().kind == "string":
                values.add(self.take().value)
                if self.peek().kind != ",":
                    break
                self.take()
            close = self.take()
            if close.kind != "}":
                raise self.fail(close, f"expected }} or a quoted string but found {_describe(close)}")
            return InSet(label.value, tuple(sorted(values)), negated=op.kind == "not in")
        raise self.fail(op, f"expected an operator after label '{label.value}'")


def _describe(tok: _Tok) -> str:
    if tok.kind == "eof":
        return "end of selector"
    if tok.kind == "string":
        if len(tok.value) > _DESCRIBE_LIMIT:  # the error names the token, not a megabyte of it
            return f"string {_quote(tok.value[:_DESCRIBE_LIMIT])}… ({len(tok.value)} characters)"
        return f"string {_quote(tok.value)}"
    if tok.kind == "label":
        return f"label '{tok.value}'"
    if tok.kind == "has":
        return f"has({tok.value})"
    return f"'{tok.kind}'" if tok.kind not in ("all", "global") else f"{tok.kind}()"


_CACHE: dict[str, Selector] = {}


def parse_selector(text: str) -> Selector:
    """Parse a Calico selector; raises SelectorError with the position of the fault."""
    cached = _CACHE.get(text)
    if cached is not None:
        return cached
    sel = Selector(_Parser(text).parse())
    if len(_CACHE) < 100_000:
        _CACHE[text] = sel
    return sel
