"""The IAD's set-line dialect as plain functions: parse, print, diff and plan the changes.

The dialect (contract with the lab's IAD simulator, lab/README.md): one command per line,
``set <path words...> <value>``; a value is double-quoted when it is empty or holds a space,
a quote or a backslash (escapes ``\\"`` and ``\\\\``); blank lines and ``#`` comments are
ignored. A path cannot be both a value and a section. The SSH I/O lives in
:mod:`provisioner.push.drivers.iad_ssh`; these functions touch no socket.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping

Config = dict[tuple[str, ...], str]

PATH_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/+@-]*$")
_NEEDS_QUOTES = re.compile(r'[\s"\\]')


class ConfigSyntaxError(ValueError):
    """A config text is not valid ``set``-line dialect."""


def split_line(line: str) -> list[str]:
    """Words of one CLI line: ``"..."`` quotes with ``\\"`` and ``\\\\`` escapes."""
    words: list[str] = []
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch in " \t":
            i += 1
        elif ch == '"':
            word: list[str] = []
            i += 1
            while i < n and line[i] != '"':
                if line[i] == "\\" and i + 1 < n and line[i + 1] in '"\\':
                    i += 1
                word.append(line[i])
                i += 1
            if i >= n:
                raise ConfigSyntaxError(f"unterminated quote in {line!r}")
            i += 1
            if i < n and line[i] not in " \t":
                raise ConfigSyntaxError(f"text right after a closing quote in {line!r}")
            words.append("".join(word))
        else:
            start = i
            while i < n and line[i] not in " \t":
                if line[i] == '"':
                    raise ConfigSyntaxError(f"quote inside a word in {line!r}")
                i += 1
            words.append(line[start:i])
    return words


def quote(value: str) -> str:
    """A value as the CLI reads it back: quoted when empty or holding space, quote, ``\\``."""
    if value and not _NEEDS_QUOTES.search(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_path(path: tuple[str, ...], where: str) -> None:
    for part in path:
        if not PATH_TOKEN.match(part):
            raise ConfigSyntaxError(f"{where}: {part!r} is not a valid path word")


def _check_value(value: str, where: str) -> None:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigSyntaxError(f"{where}: control characters are not allowed in a value")


def parse_config(text: str) -> Config:
    """Read ``set`` lines into {path: value}. Raises ConfigSyntaxError with the line number."""
    config: Config = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"line {number}"
        words = split_line(line)
        if words[0] != "set" or len(words) < 3:
            raise ConfigSyntaxError(f"{where}: expected 'set <path...> <value>', got {line!r}")
        path, value = tuple(words[1:-1]), words[-1]
        _check_path(path, where)
        _check_value(value, where)
        for other in config:
            if other != path and (other[: len(path)] == path or path[: len(other)] == other):
                raise ConfigSyntaxError(
                    f"{where}: {' '.join(path)} clashes with {' '.join(other)}"
                    " (a path cannot be both a value and a section)"
                )
        config[path] = value
    return config


def redact(line: str) -> str:
    """A CLI line fit for an error message or a log: a ``set`` value becomes ``<value>``.

    Values include passwords; only the caller knows which, so none is ever echoed here.
    """
    try:
        words = split_line(line)
    except ConfigSyntaxError:
        return "<malformed line>"
    if len(words) >= 3 and words[0] == "set":
        return " ".join([*words[:-1], "<value>"])
    return line


def format_config(config: Mapping[tuple[str, ...], str]) -> str:
    """Sorted ``set`` lines, as the device shows them."""
    return "\n".join(f"set {' '.join(p)} {quote(config[p])}" for p in sorted(config))


def diff_configs(old: Mapping[tuple[str, ...], str], new: Mapping[tuple[str, ...], str]) -> str:
    """Unified diff of sorted set lines; "" when equal."""
    if dict(old) == dict(new):
        return ""
    return "\n".join(
        difflib.unified_diff(
            format_config(old).splitlines(),
            format_config(new).splitlines(),
            "running",
            "candidate",
            lineterm="",
        )
    )


def change_lines(
    old: Mapping[tuple[str, ...], str], new: Mapping[tuple[str, ...], str]
) -> list[str]:
    """Config-mode lines that turn ``old`` into ``new``: deletes first, then sets.

    Deleting first lets a leaf become a section (and back) within one commit. Each removed
    path is deleted at its shortest prefix that ``new`` does not use (``delete`` removes a
    whole subtree), so dropping a phone line is one ``delete``, not one per setting.
    """
    deletes: list[tuple[str, ...]] = []
    for path in sorted(p for p in old if p not in new):
        for k in range(1, len(path) + 1):
            if not any(n[:k] == path[:k] for n in new):
                top = path[:k]
                break
        else:  # pragma: no cover - path is in new's prefixes only if it is a section there
            top = path
        if top not in deletes:
            deletes.append(top)
    lines = [f"delete {' '.join(p)}" for p in deletes]
    lines += [f"set {' '.join(p)} {quote(new[p])}" for p in sorted(new) if old.get(p) != new[p]]
    return lines


def merge_configs(
    running: Mapping[tuple[str, ...], str], candidate: Mapping[tuple[str, ...], str]
) -> Config:
    """Running plus candidate (candidate wins); running paths that clash are dropped."""
    merged = {
        p: v
        for p, v in running.items()
        if not any(p[: len(c)] == c or c[: len(p)] == p for c in candidate)
    }
    merged.update(candidate)
    return merged
