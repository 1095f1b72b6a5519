"""Walking a folder safely: symlinks to folders are never followed, loops are named, and
entries that are not regular files are listed with a reason instead of being opened."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable, Iterator

import tensorflow as tf

from ingestion.names import is_remote
from ingestion.reasons import os_reason

DIRECTORY_SYMLINK = "directory symlink (not followed)"
SYMLINK_LOOP = "symlink loop: points to an enclosing folder (not followed)"


def visible(names: Iterable[str]) -> list[str]:
    """The names that do not start with "." (hidden files and folders are not images).

    Args:
      names: entry names.

    Returns:
      The visible ones, sorted.
    """
    return sorted(n for n in names if not n.startswith("."))


def _dir_key(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _enclosing_keys(path: str) -> set[tuple[int, int]]:
    """The (device, inode) of the real folder path and of every folder enclosing it."""
    keys, real = set(), os.path.realpath(path)
    while True:
        with contextlib.suppress(OSError):
            keys.add(_dir_key(os.stat(real)))
        parent = os.path.dirname(real)
        if parent == real:
            return keys
        real = parent


def _walk_local(top: str, skip: Iterable[str] = ()) -> Iterator[tuple[tuple[str, ...], str | None]]:
    """Every entry below a local folder: (path parts relative to top, None or the skip reason).

    Regular files (also through a file symlink) get None: they are candidates. Everything else
    is listed with a reason and never opened: FIFOs, sockets and devices ("not a regular
    file"), broken symlinks, and directory symlinks, which are never followed (a symlink to
    the folder itself or an enclosing one is named a loop). Real subfolders are walked; a
    folder met again (a bind-mount loop) is listed, not walked twice. Names listed in skip
    (directly below top) are left out. Iterative, so deep trees need no recursion.
    """
    stack = [(top, (), _enclosing_keys(top))]
    while stack:
        folder, parts, enclosing = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            yield parts, f"unreadable folder: {os_reason(e)}"
            continue
        subfolders = []
        for entry in entries:
            if not parts and entry.name in skip:
                continue
            here = (*parts, entry.name)
            try:
                if entry.is_symlink():
                    try:
                        st = os.stat(entry.path)
                    except FileNotFoundError:
                        yield here, "broken symlink"
                        continue
                    except OSError as e:
                        yield here, ("broken symlink (it loops)" if e.errno == errno.ELOOP
                                     else f"unreadable: {os_reason(e)}")
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        yield here, SYMLINK_LOOP if _dir_key(st) in enclosing else DIRECTORY_SYMLINK
                    else:
                        yield here, None if stat.S_ISREG(st.st_mode) else "not a regular file"
                elif entry.is_dir(follow_symlinks=False):
                    key = _dir_key(entry.stat(follow_symlinks=False))
                    if key in enclosing:
                        yield here, "folder loop: the same folder as an enclosing one"
                    else:
                        subfolders.append((entry.path, here, enclosing | {key}))
                elif entry.is_file(follow_symlinks=False):
                    yield here, None
                else:
                    yield here, "not a regular file"
            except OSError as e:
                yield here, f"unreadable: {os_reason(e)}"
        stack.extend(reversed(subfolders))


def _walk_remote(top: str, skip: Iterable[str] = ()) -> Iterator[tuple[tuple[str, ...], None]]:
    """Every file below a tf.io.gfile folder (object stores have no FIFOs or symlinks)."""
    for dirpath, dirnames, filenames in tf.io.gfile.walk(top):
        rel = os.path.relpath(dirpath, top)
        parts = () if rel == "." else tuple(rel.split(os.sep))
        if not parts:
            dirnames[:] = [d for d in dirnames if d.rstrip("/") not in skip]
        dirnames.sort()
        for name in sorted(filenames):
            if parts or name not in skip:
                yield (*parts, name), None


def walk(top: str, skip: Iterable[str] = ()) -> Iterator[tuple[tuple[str, ...], str | None]]:
    """Every entry below a local or tf.io.gfile folder, never following directory symlinks.

    Args:
      top: the folder (local path or URL).
      skip: names directly below top to leave out.

    Yields:
      (path parts relative to top, None for a candidate file or the reason it is skipped).
    """
    return _walk_remote(top, skip) if is_remote(top) else _walk_local(top, skip)


