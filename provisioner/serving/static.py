"""Map a client-supplied file name to a regular file inside a served root, or refuse it.

Protocol-neutral (used by the TFTP and the HTTP servers) and free of side effects: the only
I/O is ``stat``/``readlink`` while resolving the path. Every refusal and every miss look the
same to the caller (``None``), so a server can answer both with the same bytes.
"""

from __future__ import annotations

import re
from pathlib import Path

#: Longest name accepted, in characters (the whole name, not per component).
MAX_NAME_CHARS = 255

# "C:", "c:\x", "C:x": a Windows drive prefix. Refused even though it means nothing on POSIX,
# so a name that would traverse on a Windows-backed share never reaches the filesystem.
_DRIVE = re.compile(r"^[A-Za-z]:")


def resolve_static(root: Path, name: str) -> Path | None:
    """Return the regular file ``name`` names strictly inside ``root``, or ``None``.

    One leading ``/`` is stripped (devices ask for ``/foo.cfg``). Refused: empty names,
    names over 255 characters, NUL or any other non-printable character, backslashes,
    absolute paths (``//etc/passwd`` after the strip), Windows drive prefixes, ``..``
    components, hidden components (leading ``.``, e.g. ``.git``), and anything whose real
    path (symlinks followed) is not inside the real path of ``root``. Percent-encoding is
    not decoded: ``%2e%2e%2f`` is a literal name. Missing files, directories and special
    files give ``None`` as well.

    The returned path is fully resolved (no symlinks left), so opening it soon after is
    safe unless someone who can write inside ``root`` swaps files in between.
    """
    if not _acceptable(name):
        return None
    relative = name[1:] if name.startswith("/") else name
    if not relative or relative.startswith("/") or _DRIVE.match(relative):
        return None
    parts = relative.split("/")
    # ".." is traversal; a leading "." hides files a device never asks for (.git, .env).
    if any(part.startswith(".") for part in parts):
        return None
    try:
        real_root = root.resolve(strict=True)
        candidate = (real_root / relative).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        # Missing file, symlink loop (RuntimeError on 3.11), or an unusable root.
        return None
    # is_relative_to compares whole components, so /srv/tftp-evil is not inside /srv/tftp
    # (a plain string prefix test would let it through).
    if candidate == real_root or not candidate.is_relative_to(real_root):
        return None
    try:
        if not candidate.is_file():
            return None
    except OSError:
        return None
    return candidate


def _acceptable(name: str) -> bool:
    """Cheap checks on the raw name, before touching the filesystem."""
    if not name or len(name) > MAX_NAME_CHARS:
        return False
    # isprintable() is False for NUL, control characters, and Unicode separators/format chars.
    if not name.isprintable():
        return False
    return "\\" not in name
