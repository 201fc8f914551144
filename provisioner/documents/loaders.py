"""Reading an order document's text, bounded: YAML with the line of every key, and JSON.

Both refuse before any expansion what a hostile document could make expensive (alias bombs,
deep nesting, huge integers, duplicate keys) with one :class:`~provisioner.documents.problems.
Problem` naming the line. What the data *means* is checked by :mod:`provisioner.documents.document`.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import yaml

from provisioner.documents.problems import DocumentProblem, Loc, Problem, format_path, shown

# How many nodes aliases may add to a document (each use of an alias adds its anchor's whole
# subtree). A 32-extension Office Maxi order has about 1,500 nodes in all; nine levels of nine
# nested aliases (a 340-byte "billion laughs") would add 435 million.
ALIAS_BUDGET = 10_000
# An order nests six levels (devices[i].handsets[j].extension); JSON and YAML allow any depth.
MAX_DEPTH = 20

# libyaml's parser when PyYAML was built with it (marks and lines survive: they come from
# libyaml's events); the composer below is ours either way.
_LIBYAML = hasattr(yaml, "CSafeLoader")
_SafeLoader: Any = yaml.CSafeLoader if _LIBYAML else yaml.SafeLoader
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_INT_TAG = "tag:yaml.org,2002:int"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _LineLoader(_SafeLoader):
    """A safe loader whose node graph is built by :class:`_Composer`."""


class _Composer:
    """PyYAML's composer, bounded: the node graph from parse events, with every alias counted.

    An alias shares its anchor's node, so the size an anchor expands to is known (memoised per
    node) when the alias is met: before anything is expanded, the nodes aliases add are summed
    and a document past :data:`ALIAS_BUDGET` is refused at the line of the alias that passes
    it. A node nested deeper than :data:`MAX_DEPTH` and a recursive alias are refused too.
    """

    def __init__(self, loader: Any):
        self.events = loader
        self.anchors: dict[str, yaml.Node] = {}
        self.sizes: dict[int, int] = {}  # id(node) -> expanded size, once the node is complete
        self.added = 0

    def single_node(self) -> yaml.Node | None:
        ev = self.events
        ev.get_event()  # stream start
        node = None
        if not ev.check_event(yaml.StreamEndEvent):
            ev.get_event()  # document start
            node, _ = self.node(1)
            ev.get_event()  # document end
        if not ev.check_event(yaml.StreamEndEvent):
            event = ev.get_event()
            raise yaml.composer.ComposerError(
                "expected a single document in the stream",
                node.start_mark if node is not None else None,
                "but found another document",
                event.start_mark,
            )
        ev.get_event()
        return node

    def node(self, depth: int) -> tuple[yaml.Node, int]:
        ev = self.events
        if ev.check_event(yaml.AliasEvent):
            event = ev.get_event()
            line = event.start_mark.line + 1
            target = self.anchors.get(event.anchor)
            if target is None:
                raise yaml.composer.ComposerError(
                    None, None, f"found undefined alias {event.anchor!r}", event.start_mark
                )
            size = self.sizes.get(id(target))
            if size is None:
                raise DocumentProblem(
                    Problem("", "a YAML alias inside the node it names (recursive)", line=line)
                )
            self.added += size
            if self.added > ALIAS_BUDGET:
                raise DocumentProblem(
                    Problem("", f"YAML aliases expand to more than {ALIAS_BUDGET} nodes", line=line)
                )
            return target, size
        event = ev.peek_event()
        if depth > MAX_DEPTH:
            raise DocumentProblem(
                Problem(
                    "",
                    f"nested more than {MAX_DEPTH} levels deep",
                    line=event.start_mark.line + 1,
                )
            )
        anchor = event.anchor
        if anchor is not None and anchor in self.anchors:
            raise yaml.composer.ComposerError(
                f"found duplicate anchor {anchor!r}; first occurrence",
                self.anchors[anchor].start_mark,
                "second occurrence",
                event.start_mark,
            )
        node: yaml.Node
        size = 1
        if ev.check_event(yaml.ScalarEvent):
            event = ev.get_event()
            tag = event.tag
            if tag is None or tag == "!":
                tag = ev.resolve(yaml.ScalarNode, event.value, event.implicit)
            node = yaml.ScalarNode(
                tag, event.value, event.start_mark, event.end_mark, style=event.style
            )
            if anchor is not None:
                self.anchors[anchor] = node
        elif ev.check_event(yaml.SequenceStartEvent):
            event = ev.get_event()
            tag = event.tag
            if tag is None or tag == "!":
                tag = ev.resolve(yaml.SequenceNode, None, event.implicit)
            node = yaml.SequenceNode(tag, [], event.start_mark, None, flow_style=event.flow_style)
            if anchor is not None:
                self.anchors[anchor] = node  # before its items: an alias in them is recursive
            while not ev.check_event(yaml.SequenceEndEvent):
                item, n = self.node(depth + 1)
                node.value.append(item)
                size += n
            node.end_mark = ev.get_event().end_mark
        else:
            event = ev.get_event()  # mapping start (the parser yields nothing else here)
            tag = event.tag
            if tag is None or tag == "!":
                tag = ev.resolve(yaml.MappingNode, None, event.implicit)
            node = yaml.MappingNode(tag, [], event.start_mark, None, flow_style=event.flow_style)
            if anchor is not None:
                self.anchors[anchor] = node
            while not ev.check_event(yaml.MappingEndEvent):
                key, nk = self.node(depth + 1)
                value, nv = self.node(depth + 1)
                node.value.append((key, value))
                size += nk + nv
            node.end_mark = ev.get_event().end_mark
        self.sizes[id(node)] = size
        return node, size


def _problem_at(path: Loc, message: str, line: int | None = None) -> DocumentProblem:
    """The problem of the value at ``path`` (to raise)."""
    return DocumentProblem(Problem(format_path(path), message, line=line))


def _scalar(loader: Any, node: yaml.Node, path: Loc) -> Any:
    """A scalar's value; a value YAML's constructors refuse is a problem at its line."""
    line = node.start_mark.line + 1
    limit = sys.get_int_max_str_digits()
    if node.tag == _INT_TAG and limit and sum(c.isdigit() for c in node.value) > limit:
        digits = sum(c.isdigit() for c in node.value)
        raise _problem_at(path, f"an integer of {digits} digits (at most {limit})", line=line)
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError:
        raise
    except Exception as exc:  # a constructor's own failure on a malformed value
        kind = str(node.tag).rsplit(":", 1)[-1]
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:100]
        raise _problem_at(path, f"not a valid {kind}: {reason}", line=line) from None


def _compose(
    loader: Any,
    node: yaml.Node,
    path: Loc,
    lines: dict[Loc, int],
) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        if node.tag != _MAP_TAG:
            raise _problem_at(path, f"YAML tag {node.tag} is not used in orders", line=lines[path])
        # Keys a merge (``<<: *defaults``) brings come first and may be overridden by the
        # mapping's own keys; only its own keys must not repeat.
        own = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE_TAG)
        loader.flatten_mapping(node)
        first_own = len(node.value) - own
        out: dict[Any, Any] = {}
        own_keys: set[Any] = set()
        for index, (key_node, value_node) in enumerate(node.value):
            key = _scalar(loader, key_node, path) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise _problem_at(
                    path,
                    f"key {shown(key) if key is not None else '(a list or mapping)'} is not a name",
                    line=key_node.start_mark.line + 1,
                )
            if key in out and index >= first_own and key in own_keys:
                raise _problem_at((*path, key), "duplicate key", line=key_node.start_mark.line + 1)
            if index >= first_own:
                own_keys.add(key)
            out[key] = _compose(loader, value_node, (*path, key), lines)
            lines.setdefault((*path, key), key_node.start_mark.line + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _SEQ_TAG:
            raise _problem_at(path, f"YAML tag {node.tag} is not used in orders", line=lines[path])
        return [_compose(loader, item, (*path, i), lines) for i, item in enumerate(node.value)]
    return _scalar(loader, node, path)


def _reader_line(text: str, exc: yaml.reader.ReaderError) -> int:
    # libyaml counts bytes of UTF-8, PyYAML's own reader characters.
    if _LIBYAML:
        return text.encode("utf-8", "surrogatepass")[: exc.position].count(b"\n") + 1
    return text[: exc.position].count("\n") + 1


def load_yaml(text: str) -> tuple[Any, dict[Loc, int]]:
    """Parse one YAML document; raise :class:`DocumentProblem` with a line on any error."""
    loader = None
    try:
        loader = _LineLoader(text)  # PyYAML's own reader checks every character here
        node = _Composer(loader).single_node()
        if node is None:
            raise DocumentProblem(Problem("", "the file is empty", line=1))
        lines: dict[Loc, int] = {}
        return _compose(loader, node, (), lines), lines
    except yaml.reader.ReaderError as exc:
        char = f" (character #x{exc.character:04x})" if isinstance(exc.character, int) else ""
        raise DocumentProblem(
            Problem("", f"YAML: {exc.reason}{char}", line=_reader_line(text, exc))
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        message = exc.problem or "invalid YAML"
        raise DocumentProblem(Problem("", f"YAML syntax: {message}", line=line)) from None
    except yaml.YAMLError as exc:
        raise DocumentProblem(Problem("", f"YAML: {exc}".splitlines()[0])) from None
    finally:
        if loader is not None:
            loader.dispose()


# --------------------------------------------------------------------------- JSON


class _JsonRefused(Exception):
    """A JSON value we refuse; ``needle`` finds where it is (the JSON decoder does not say)."""

    def __init__(self, message: str, needle: str):
        super().__init__(message)
        self.needle = needle


def _json_int(text: str) -> int:
    limit = sys.get_int_max_str_digits()
    digits = len(text.lstrip("-"))
    if limit and digits > limit:
        raise _JsonRefused(f"an integer of {digits} digits (at most {limit})", rf"\d{{{digits}}}")
    return int(text)


def _json_constant(name: str) -> Any:
    raise _JsonRefused(f"{name} is not a JSON value", rf"\b{name}\b")


def load_json(text: str) -> Any:
    """Parse a JSON document; raise :class:`DocumentProblem` on any error, duplicate keys
    included (named by their path: JSON keeps no lines for them)."""
    duplicates: dict[int, str] = {}  # id(object) -> its first repeated key

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                duplicates.setdefault(id(out), key)
            out[key] = value
        return out

    try:
        data = json.loads(
            text, object_pairs_hook=pairs, parse_int=_json_int, parse_constant=_json_constant
        )
    except json.JSONDecodeError as exc:
        raise DocumentProblem(Problem("", f"JSON syntax: {exc.msg}", line=exc.lineno)) from None
    except _JsonRefused as exc:
        where = re.search(exc.needle, text)
        line = text.count("\n", 0, where.start()) + 1 if where else None
        raise DocumentProblem(Problem("", f"JSON: {exc}", line=line)) from None
    except RecursionError:
        raise DocumentProblem(Problem("", f"nested more than {MAX_DEPTH} levels deep")) from None
    # One walk, without recursion: depth, and where the repeated keys are.
    found: list[Loc] = []
    stack: list[tuple[Any, Loc]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if len(path) >= MAX_DEPTH:
            raise _problem_at(path, f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            if id(value) in duplicates:
                found.append((*path, duplicates[id(value)]))
            stack.extend((v, (*path, k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, (*path, i)) for i, v in enumerate(value))
    if found:
        first = min(found, key=lambda loc: [str(p) for p in loc])
        raise _problem_at(first, "duplicate key")
    return data
