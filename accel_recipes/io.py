"""Atomic writes: a file or folder is written under a temporary name beside its target, then renamed into place,
so a crash, a kill or a full disk never leaves a half-written result where a finished one was expected."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; once the block succeeds it replaces ``path`` in one rename.
    On an error the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(name)
    os.chmod(temporary, 0o666 & ~_current_umask())  # mkstemp makes it 0600; a result file is as readable as any other
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _current_umask() -> int:
    mask = os.umask(0)  # the only way to read the umask is to set it; put it straight back
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_file(path) as temporary:
        temporary.write_text(text)


def write_json_atomic(path: str | Path, data: Any, **dump_options: Any) -> None:
    """JSON with an indent of 2 and sorted keys unless ``dump_options`` say otherwise."""
    options = {"indent": 2, "sort_keys": True, **dump_options}
    write_text_atomic(path, json.dumps(data, **options) + "\n")


def copy_file_atomic(source: str | Path, target: str | Path) -> None:
    with atomic_file(target) as temporary:
        shutil.copyfile(source, temporary)


def temporary_dir_for(final: Path) -> Path:
    """Where a folder is assembled before ``replace_dir`` moves it to ``final`` (hidden, same parent)."""
    return final.with_name(f".{final.name}.tmp")


def replace_dir(temporary: Path, final: Path) -> None:
    """Move a finished folder into place; an older folder of the same name is removed only afterwards."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    try:
        os.replace(temporary, final)
    except OSError:
        if old.exists() and not final.exists():
            os.replace(old, final)  # put the previous folder back: the target is never left missing
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder; once the block succeeds it replaces ``final``. On an error it is removed
    and ``final`` is left as it was."""
    final = Path(final)
    temporary = temporary_dir_for(final)
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    try:
        yield temporary
        apply_umask(temporary)
        replace_dir(temporary, final)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def apply_umask(folder: Path) -> None:
    """Give ``folder`` and everything in it the permissions the umask gives new files and folders: some writers
    (safetensors, temporary files) make theirs readable by the owner alone, yet a result folder is meant to be
    shared like any other file the user writes."""
    mask = _current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, folders, files in os.walk(folder):
        for name in folders:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask)
