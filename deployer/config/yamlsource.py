"""YAML that remembers where every value came from.

PyYAML's composer keeps the position of every node; we build plain Python data from the
node tree and, beside it, a map from key path to line so that every validation error can
name the file, the key path and the line. Duplicate keys, which PyYAML silently accepts,
are reported (a duplicated job id would otherwise hide a job).

A declaration is untrusted input: nesting is bounded while PyYAML composes (its composer
recurses, so a deep `[[[[...` would end in RecursionError), and so is the number of values
built, aliases included (a 400-byte "billion laughs" document names 10^9 values). Both end
in a located error at once, never a long wait, a traceback or gigabytes of memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deployer.errors import InvalidInput, Problem

KeyPath = tuple[str | int, ...]

MAX_DEPTH = 64  # mappings and lists inside each other; a declaration needs about 8
MAX_VALUES = 50_000  # values once every alias is expanded; a large declaration has a few thousand


class _TooBig(Exception):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message, self.line = message, line


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses nesting deeper than MAX_DEPTH."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]  # types-PyYAML leaves Parser.peek_event unannotated
                raise _TooBig(f"values are nested more than {MAX_DEPTH} levels deep; a declaration needs far fewer "
                              "(an unclosed '[' or '{'?)", mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def format_key_path(path: KeyPath) -> str:
    """``('jobs', 'backup', 'args', 0)`` -> ``jobs.backup.args[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class SourceMap:
    """Lines of the values (and keys) of one YAML document."""

    file: str
    lines: dict[KeyPath, int] = field(default_factory=dict)
    # How a boolean was spelt (yes, on, True...), to explain YAML's reading of it.
    booleans: dict[KeyPath, str] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of its nearest ancestor that exists in the file."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]

    def problem(self, path: KeyPath, message: str) -> Problem:
        return Problem(message, file=self.file, key_path=format_key_path(path) or None, line=self.line_of(path))


def _scalar(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    return loader.construct_object(node, deep=True)


def _build(loader: yaml.SafeLoader, node: yaml.Node, path: KeyPath, src: SourceMap, problems: list[Problem],
           budget: list[int]) -> Any:
    # An alias is the node it names, built again each time it is used: count every value built.
    budget[0] -= 1
    if len(path) > MAX_DEPTH:
        raise _TooBig(f"values are nested more than {MAX_DEPTH} levels deep once aliases are expanded "
                      "(an alias used inside the value it names?)", node.start_mark.line + 1)
    if budget[0] < 0:
        raise _TooBig(f"the document expands to more than {MAX_VALUES} values once its aliases are expanded "
                      "(aliases of aliases: a 'billion laughs' document?); write the values out", node.start_mark.line + 1)
    src.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(loader, key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, (str, int, float, bool)) or key is None:
                problems.append(
                    Problem("a key must be a plain string", file=src.file, key_path=format_key_path(path) or None,
                            line=key_node.start_mark.line + 1)
                )
                continue
            key = str(key) if not isinstance(key, str) else key
            child = (*path, key)
            if key in result:
                problems.append(
                    Problem(
                        f"duplicate key '{key}' (first defined at line {src.lines.get(child)})",
                        file=src.file,
                        key_path=format_key_path(child),
                        line=key_node.start_mark.line + 1,
                    )
                )
                continue
            src.lines[child] = key_node.start_mark.line + 1
            result[key] = _build(loader, value_node, child, src, problems, budget)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, (*path, i), src, problems, budget) for i, item in enumerate(node.value)]
    value = _scalar(loader, node)  # type: ignore[arg-type]
    if isinstance(value, bool):
        src.booleans[path] = str(node.value)
    return value


def _syntax_message(exc: yaml.MarkedYAMLError) -> tuple[str, int | None]:
    """PyYAML's words, turned into what a person can act on, and the line to look at."""
    problem = exc.problem or "invalid YAML"
    context = exc.context or ""
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else None
    if "quoted scalar" in context and "end of stream" in problem:
        start = exc.context_mark.line + 1 if exc.context_mark else line
        return "the quoted string that starts on this line is never closed (add the closing quote)", start
    if "'\\t'" in problem or "\t" in problem:
        return "a tab character is used for indentation; YAML indents with spaces only", line
    if "expected <block end>" in problem:
        return ("this line's indentation does not fit the lines above it "
                "(keys of one mapping must line up; nested keys go further right)"), line
    if problem == "mapping values are not allowed here":
        return (f"{problem} (check the indentation of this line against the line above; "
                "a value containing ': ' must be quoted)"), line
    return (f"{context}, {problem}" if context else problem), line


def load_yaml(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document; raise InvalidInput with file and line on any syntax error."""
    src = SourceMap(file)
    loader = _BoundedLoader(text)
    problems: list[Problem] = []
    try:
        node = loader.get_single_node()
        data = None if node is None else _build(loader, node, (), src, problems, [MAX_VALUES])
    except _TooBig as exc:
        raise InvalidInput([Problem(f"YAML error: {exc.message}", file=file, line=exc.line)]) from None
    except yaml.MarkedYAMLError as exc:
        what, line = _syntax_message(exc)
        raise InvalidInput([Problem(f"YAML syntax error: {what}", file=file, line=line)]) from None
    except yaml.YAMLError as exc:  # e.g. more than one document
        raise InvalidInput([Problem(f"YAML error: {exc}", file=file)]) from None
    finally:
        loader.dispose()
    if problems:
        raise InvalidInput(problems)
    return data, src


def load_yaml_file(path: Path, shown_as: str | None = None) -> tuple[Any, SourceMap]:
    """Read and parse a YAML file; unreadable files are input errors too."""
    name = shown_as or str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput([Problem("file not found", file=name)]) from None
    except IsADirectoryError:
        raise InvalidInput([Problem("is a folder, not a file", file=name)]) from None
    except OSError as exc:
        raise InvalidInput([Problem(f"cannot read file: {exc.strerror}", file=name)]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InvalidInput([Problem(f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}, "
                                    f"column {column}); save it as UTF-8", file=name, line=line)]) from None
    return load_yaml(text, name)
