"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """Call `write(temporary_path)`, then rename the result over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=4, ensure_ascii=False) + "\n")


def path_component(name: str, *, what: str | None = None) -> str:
    """`name` if it is safe as one folder or file name inside a parent, else a ValueError saying why.

    Names from config files and logs become paths (`pv-experiments/<name>`, `<out>/models/<name>-...`,
    `vectors/<model>/<trait>.safetensors`); `..`, a slash or an absolute path would write outside the folder they
    belong in. `what` says where the name came from (e.g. "the logs' trait"), for the message.
    """
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name or Path(name).is_absolute():
        raise ValueError(f"{what + ' ' if what else ''}{name!r} cannot be a folder name: use letters, digits, '-', "
                         "'_' or '.', with no '/' and not '..' (it becomes a path inside the output folder)")
    return name
