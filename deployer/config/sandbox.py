"""The Jinja2 environment of a declaration's templates: sandboxed, and bounded in time and size.

Paths, args, env values and vars are templates written by whoever writes ``deployer.yml`` (and
fed with inventory variables), rendered on the controller, often by root. Jinja's sandbox
stops attribute tricks (``__class__``...) but not a template that computes forever or fills
memory: ``9**9**9``, ``'x' * 10**10``, ``'x'.center(10**10)``, a macro calling itself
(RecursionError), nested loops over ``range(100000)``. So the language is cut down to what a
path or an argument needs:

- statements: output and ``{% if %}`` only (no loops, macros, ``set``, includes, imports):
  every expression is evaluated once, so the work is bounded by the template's length;
- every value computed (operators, calls, filters) and the output itself hold at most
  ``MAX_SIZE`` characters (or items), checked BEFORE the operations that could build a bigger
  one (repetition, powers, padding), and after all others;
- only filters whose result is at most about the size of their input;
- ``%`` formatting of text is refused (its widths allocate what they ask for).

A template that breaks a rule gets ``TemplateLimit`` (a ``jinja2.TemplateError``): the
renderer reports it like any template error, with file, line and key path.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import jinja2
import jinja2.sandbox
from jinja2 import nodes

MAX_SIZE = 100_000  # characters of text (or items of a list) in any value a template computes
MAX_JOINED = 32  # pieces joined with ~ in one expression
MAX_POWER_BITS = 4096  # bits of an integer power

# Filters whose result is no bigger than (a small multiple of) their input; the others
# (center, indent, wordwrap, format, batch, urlize...) take sizes or are not needed here.
ALLOWED_FILTERS = frozenset({
    "abs", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float", "int", "items",
    "join", "last", "length", "list", "lower", "max", "min", "replace", "reverse", "round", "safe", "sort",
    "string", "striptags", "sum", "title", "tojson", "trim", "truncate", "unique", "upper", "urlencode",
    "wordcount", "bool", "select", "reject", "selectattr", "rejectattr", "map", "attr",
})
ALLOWED_STATEMENTS = (nodes.Output, nodes.If)


class TemplateLimit(jinja2.TemplateError):
    """The template does something a declaration's template may not do."""


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)) else 0


def _bounded(value: Any) -> Any:
    if _size(value) > MAX_SIZE:
        raise TemplateLimit(f"it computes a value of more than {MAX_SIZE} characters")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_POWER_BITS:
        raise TemplateLimit(f"it computes a number of more than {MAX_POWER_BITS} bits")
    return value


def _check_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    # A number given to a call or a filter is a width, a count or a length more often than
    # not: one above MAX_SIZE asks for more than any value may hold.
    for arg in (*args, *kwargs.values()):
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_SIZE:
            raise TemplateLimit(f"it passes the number {arg} to a function (at most {MAX_SIZE})")


def _replace_size(text: Any, old: Any, new: Any, count: Any = -1) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        times = (len(text) + 1) if old == "" else text.count(old)
        if isinstance(count, int) and count >= 0:
            times = min(times, count)
        if len(text) + times * (len(new) - len(old)) > MAX_SIZE:
            raise TemplateLimit(f"its replace would make a value of more than {MAX_SIZE} characters")


def _wrap_filter(name: str, function: Any) -> Any:
    # Jinja passes the environment or context first to the filters marked for it (jinja_pass_arg).
    skip = 1 if hasattr(function, "jinja_pass_arg") else 0

    def bounded(*args: Any, **kwargs: Any) -> Any:
        value, extra = args[skip], args[skip + 1:]
        _check_arguments(extra, kwargs)
        if name == "replace":
            _replace_size(str(value), *extra, **kwargs)
        return _bounded(function(*args, **kwargs))

    if skip:
        bounded.jinja_pass_arg = function.jinja_pass_arg  # type: ignore[attr-defined]
    return bounded


class BoundedEnvironment(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """Jinja2 for ``deployer.yml``'s templates; use ``render`` (it also bounds the output)."""

    intercepted_binops = frozenset({"*", "**", "%", "+", "//", "/", "-"})
    intercepted_unops = frozenset({"-"})

    def __init__(self) -> None:
        super().__init__(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
        self.filters = {name: _wrap_filter(name, f) for name, f in self.filters.items() if name in ALLOWED_FILTERS}
        self.globals = {"range": self._range, "dict": dict}  # not lipsum, cycler, joiner, namespace

    @staticmethod
    def _range(*args: Any) -> range:
        _check_arguments(args, {})
        return range(*args)

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if _size(seq) and isinstance(times, int) and _size(seq) * max(times, 0) > MAX_SIZE:
                    raise TemplateLimit(f"it repeats a value to more than {MAX_SIZE} characters")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and abs(left) > 1 and right * math.log2(abs(left)) > MAX_POWER_BITS:
                raise TemplateLimit(f"its power has more than {MAX_POWER_BITS} bits")
        elif operator == "%" and isinstance(left, str):
            raise TemplateLimit("it formats text with % (join pieces with ~ instead)")
        return _bounded(super().call_binop(context, operator, left, right))

    def wrap_str_format(self, value: Any) -> Any:
        # str.format and format_map: their widths allocate what they ask for ('{:999999999}').
        if super().wrap_str_format(value) is not None:
            raise TemplateLimit("it formats text with format() (join pieces with ~ instead)")
        return None

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _check_arguments(args, kwargs)
        if getattr(__obj, "__name__", None) == "replace" and isinstance(getattr(__obj, "__self__", None), str):
            _replace_size(__obj.__self__, *args, **kwargs)
        return _bounded(super().call(__context, __obj, *args, **kwargs))

    def _check(self, tree: nodes.Template) -> None:
        for node in tree.body:
            self._check_statement(node)
        for node in tree.find_all(nodes.Filter):
            if node.name not in ALLOWED_FILTERS:
                raise TemplateLimit(f"filter '{node.name}' is not available in deployer.yml (available: "
                                    f"{', '.join(sorted(ALLOWED_FILTERS))})")
        for node in tree.find_all(nodes.Concat):
            if len(node.nodes) > MAX_JOINED:
                raise TemplateLimit(f"it joins more than {MAX_JOINED} pieces with ~")

    def _check_statement(self, node: nodes.Node) -> None:
        if not isinstance(node, ALLOWED_STATEMENTS):
            word = type(node).__name__.lower()
            raise TemplateLimit(f"'{{% {word} %}}' is not available in deployer.yml: a template here is "
                                "expressions ({{ ... }}), filters and {% if %}")
        if isinstance(node, nodes.If):
            for child in (*node.body, *node.elif_, *node.else_):
                self._check_statement(child)

    def render(self, source: str, context: dict[str, Any]) -> str:
        """``source`` rendered with ``context``; TemplateLimit (or another TemplateError) when it can't be."""
        try:
            tree = self.parse(source)
            self._check(tree)
            template = self.from_string(tree)
        except RecursionError:  # Jinja's parser and Python's compiler recurse
            raise TemplateLimit("its expressions are nested too deeply") from None
        out: list[str] = []
        size = 0
        pieces: Iterator[str] = template.generate(context)
        for piece in pieces:  # streamed: many {{ }} in a row are counted as they come
            size += len(piece)
            if size > MAX_SIZE:
                raise TemplateLimit(f"its output is longer than {MAX_SIZE} characters")
            out.append(piece)
        return "".join(out)
