"""Image folder -> sharded TFRecord files of tf.Example, plus an ingestion report (a Beam job).

Two layouts are accepted (class names sorted, at least two classes):
  * ``root/train/<class>/`` + ``root/validation/<class>/``: train stays train; the validation
    folder is split deterministically into eval and test (the tutorial moves 20% of it to test);
  * ``root/<class>/``: a deterministic hash split into train/eval/test (default 80/10/10).

Every file is decoded once to validate it; corrupt, non-image, tiny or undecodable files are
skipped with a one-line human reason; identical content is kept once (so it can never land in
two splits). Hostile input never hangs or crashes the job: only regular files are opened
(FIFOs, devices and broken symlinks are listed as skipped), directory symlinks inside the class
folders are not followed, files over ``max_file_bytes`` are not read, images whose header
declares more than ``max_image_pixels`` are not decoded, and names that are not UTF-8 are
escaped (``printable``). The report accounts for every file under the root exactly once and
reconciles per class (inputs = written + skipped). Output goes to
``<tfrecords_dir>/<content fingerprint>/`` so unchanged input is never converted twice, and
ImportExampleGen sees the same files (and TFX caching skips it) on a rerun.

Runs in memory locally; the same transforms run on any Beam runner.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import errno
import hashlib
import json
import logging
import os
import stat
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

import apache_beam as beam
import tensorflow as tf

from contract import features
from contract.artifacts import INGESTION_REPORT_FILE as REPORT_FILE
from contract.labels import LABELS_FILE, format_labels
from ingestion.beam_options import beam_pipeline_args
from ingestion.settings import DEFAULT_SPLIT, SplitSettings

LOG = logging.getLogger("ingestion")

# Bump when the conversion output changes, so old fingerprints are not reused.
CONVERSION_VERSION = 2
COMPLETE_MARKER = "_COMPLETE"

TRAIN_VALIDATION = "train_validation"
CLASS_FOLDERS = "class_folders"


class IngestError(ValueError):
    """The image folder cannot be converted (missing, wrong layout, too few classes)."""


@dataclass(frozen=True)
class SourceFile:
    """One candidate image: its report path, its path on disk, its class and its folder.

    ``path`` is the path relative to the root as the report and the tf.Example show it: always
    printable UTF-8 (see ``printable``). ``fs_path`` is the same relative path as the raw bytes
    on disk, so a name that is not UTF-8 can still be opened.
    """

    path: str
    label: int
    origin: str  # "train" | "validation" | "all"
    fs_path: bytes = b""


@dataclass
class ImageTree:
    """The scan of an image folder: layout, classes, candidate images and skipped entries.

    ``skipped`` holds the entries that are never opened, as (report path, reason, class name or
    None outside the class folders): files outside the class folders, hidden files, FIFOs and
    other non-regular files, broken symlinks and directory symlinks (which are not followed).
    """

    root: str
    layout: str
    classes: list[str]
    files: list[SourceFile]
    skipped: list[tuple[str, str, str | None]] = field(default_factory=list)

    def inputs_per_class(self) -> dict[str, int]:
        """Every entry in each class's folders (candidates and entries skipped at the scan).

        Returns:
          {class name: number of entries}, in class order.
        """
        counts = Counter(self.classes[f.label] for f in self.files)
        counts.update(c for _, _, c in self.skipped if c is not None)
        return {c: counts[c] for c in self.classes}


@dataclass
class IngestResult:
    """Where the TFRecords are, the report, and whether an earlier conversion was reused."""

    output_dir: str
    report: dict
    reused: bool
    seconds: float = 0.0  # wall time of convert_image_tree, scan and fingerprint included


# ---------------------------------------------------------------------------------------------
# Names and reading files safely


def printable(name: str | bytes) -> str:
    """A file name (or path) as printable UTF-8 text, for the report, the tf.Example and errors.

    Printable UTF-8 names are returned unchanged; a byte that is not UTF-8 becomes ``\\xNN``
    (so b"caf\\xe9.jpg" -> "caf\\\\xe9.jpg") and a control character its escape (a line break
    becomes ``\\n``).

    Args:
      name: a name as os.listdir returns it (undecodable bytes as surrogates) or as bytes.

    Returns:
      The printable text.
    """
    raw = name if isinstance(name, bytes) else os.fsencode(name)
    text = raw.decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def _is_remote(path: str | bytes) -> bool:
    return isinstance(path, str) and "://" in path


def _os_reason(e: OSError) -> str:
    """A short human text for an OSError ("permission denied"), without the path."""
    return (e.strerror or type(e).__name__).lower()


_OP_REASONS = {tf.errors.NotFoundError: "not found",
               tf.errors.PermissionDeniedError: "permission denied"}


def _op_reason(e: tf.errors.OpError) -> str:
    """A short human text for a TensorFlow file system error, without TF's op text."""
    return next((text for kind, text in _OP_REASONS.items() if isinstance(e, kind)), "read error")


class _Skip(Exception):
    """A file is skipped; the message is the one-line human reason."""


def _too_big(size: int, max_bytes: int) -> _Skip:
    return _Skip(f"file too large: {size} bytes (limit {max_bytes})")


def _read_chunks(path: str | bytes, max_bytes: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The bytes of a regular file, in chunks, at most max_bytes in all (raises _Skip).

    Only regular files are opened (never a FIFO, socket or device, which could block or never
    end): local files are checked with stat before opening, opened non-blocking and checked
    again with fstat on the open descriptor. A file longer than max_bytes is refused before
    reading when its size says so, and reading stops at max_bytes + 1 bytes when it grows.
    """
    if _is_remote(path):
        try:
            size = tf.io.gfile.stat(path).length
            if size > max_bytes:
                raise _too_big(size, max_bytes)
            with tf.io.gfile.GFile(path, "rb") as f:
                read = 0
                while piece := f.read(chunk):
                    read += len(piece)
                    if read > max_bytes:
                        raise _too_big(read, max_bytes)
                    yield piece
        except tf.errors.OpError as e:
            raise _Skip(f"unreadable: {_op_reason(e)}") from None
        return
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _Skip("broken symlink" if os.path.islink(path) else "unreadable: not found") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _Skip("broken symlink (it loops)") from None
        raise _Skip(f"unreadable: {_os_reason(e)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _Skip("not a regular file")
    if st.st_size > max_bytes:
        raise _too_big(st.st_size, max_bytes)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise _Skip(f"unreadable: {_os_reason(e)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced since the stat above
            raise _Skip("not a regular file")
        read = 0
        while True:
            try:
                piece = os.read(fd, min(chunk, max_bytes + 1 - read))
            except OSError as e:
                raise _Skip(f"unreadable: {_os_reason(e)}") from None
            if not piece:
                return
            read += len(piece)
            if read > max_bytes:
                raise _too_big(read, max_bytes)
            yield piece
    finally:
        os.close(fd)


def read_source(path: str | bytes, max_bytes: int) -> tuple[bytes | None, str | None]:
    """Reads a whole regular file of at most max_bytes: (data, None) or (None, skip reason).

    Args:
      path: a local path (str or bytes) or a tf.io.gfile URL.
      max_bytes: the largest file read; a larger one is refused, mostly without reading it.

    Returns:
      (the bytes, None), or (None, a one-line human reason such as "not a regular file",
      "broken symlink" or "file too large: 70000000 bytes (limit 67108864)").
    """
    try:
        return b"".join(_read_chunks(path, max_bytes)), None
    except _Skip as e:
        return None, str(e)


def _digest_source(path: str | bytes, max_bytes: int) -> str:
    """The SHA-256 of a file read as read_source would (streamed), or its skip reason."""
    h = hashlib.sha256()
    try:
        for piece in _read_chunks(path, max_bytes):
            h.update(piece)
    except _Skip as e:
        return f"skipped: {e}"
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Scanning the folder

DIRECTORY_SYMLINK = "directory symlink (not followed)"
SYMLINK_LOOP = "symlink loop: points to an enclosing folder (not followed)"


def _visible(names: Iterable[str]) -> list[str]:
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
            yield parts, f"unreadable folder: {_os_reason(e)}"
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
                                     else f"unreadable: {_os_reason(e)}")
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
                yield here, f"unreadable: {_os_reason(e)}"
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


def _walk(top: str, skip: Iterable[str] = ()) -> Iterator[tuple[tuple[str, ...], str | None]]:
    return _walk_remote(top, skip) if _is_remote(top) else _walk_local(top, skip)


def _class_dirs(folder: str) -> list[str]:
    """The visible subfolders of folder (symlinks to folders included), sorted."""
    try:
        if _is_remote(folder):
            names = [n.rstrip("/") for n in tf.io.gfile.listdir(folder)]
            return [n for n in _visible(names) if tf.io.gfile.isdir(os.path.join(folder, n))]
        return [n for n in _visible(os.listdir(folder)) if os.path.isdir(os.path.join(folder, n))]
    except OSError as e:
        raise IngestError(f"cannot list '{printable(folder)}': {_os_reason(e)}") from None
    except tf.errors.OpError as e:
        raise IngestError(f"cannot list '{printable(folder)}': {_op_reason(e)}") from None


def _check_class_names(parent: str, names: list[str]) -> None:
    """Class names become labels (labels.txt, the model): printable UTF-8 or an IngestError."""
    for name in names:
        if printable(name) != name:
            raise IngestError(
                f"class folder '{printable(os.path.join(parent, name))}' has a name that is not "
                "printable UTF-8 (class names become the model's labels); rename it")


def _check_not_enclosing(root: str, folder: str) -> None:
    """A class folder that is (a symlink to) the root or an enclosing folder is an error."""
    if _is_remote(root):
        return
    real_root, real = os.path.realpath(root), os.path.realpath(folder)
    if real_root == real or real_root.startswith(real.rstrip(os.sep) + os.sep):
        raise IngestError(f"class folder '{printable(folder)}' is a symlink to the image folder "
                          "or a folder enclosing it")


def _rel(parts: tuple[str, ...]) -> tuple[str, bytes]:
    """(report path, on-disk relative path as bytes) of relative path parts."""
    if not parts:
        return ".", b"."
    return "/".join(printable(p) for p in parts), os.fsencode(os.path.join(*parts))


def scan_image_tree(root: str) -> ImageTree:
    """Finds the layout, the classes and every entry under root (raises IngestError if unusable).

    Only regular files become candidates; every other entry is listed with its reason (see
    ImageTree.skipped). Directory symlinks inside the class folders are not followed; the root,
    train/, validation/ and the class folders themselves may be symlinks.

    Args:
      root: the image folder (local path or a tf.io.gfile URL).

    Returns:
      The scan: candidate images per class and the entries skipped without reading them.

    Raises:
      IngestError: root is missing, has neither layout, has fewer than two classes, a class
        folder name that is not printable UTF-8, a validation/ class that train/ lacks, no
        files in its class folders, a class without images (or, in the train/validation
        layout, without images in one of the two folders), or two entries whose printable
        names are the same.
    """
    is_dir = tf.io.gfile.isdir if _is_remote(root) else os.path.isdir
    if not is_dir(root):
        raise IngestError(
            f"image folder '{printable(root)}' does not exist or is not a directory")
    top = _class_dirs(root)
    if "train" in top or "validation" in top:
        if "train" not in top or "validation" not in top:
            raise IngestError(
                f"'{printable(root)}' has a {'train' if 'train' in top else 'validation'}/ "
                f"folder but no {'validation' if 'train' in top else 'train'}/ folder; expected "
                "root/train/<class>/ + root/validation/<class>/ or root/<class>/")
        layout, origins = TRAIN_VALIDATION, ["train", "validation"]
        classes = _class_dirs(os.path.join(root, "train"))
        _check_class_names(os.path.join(root, "train"), classes)
        in_validation = _class_dirs(os.path.join(root, "validation"))
        _check_class_names(os.path.join(root, "validation"), in_validation)
        extra = sorted(set(in_validation) - set(classes))
        if extra:
            raise IngestError(f"validation/ has classes that train/ lacks: {extra}")
    else:
        layout, origins, classes = CLASS_FOLDERS, [""], top
        _check_class_names(root, classes)
    if len(classes) < 2:
        raise IngestError(
            f"found {len(classes)} class folder(s) in '{printable(root)}' ({classes}); need at "
            "least 2. Expected root/train/<class>/ + root/validation/<class>/ or root/<class>/")

    tree = ImageTree(root=root, layout=layout, classes=classes, files=[])
    candidates: Counter = Counter()  # (origin, class index) -> candidate files
    for origin in origins:
        for index, name in enumerate(classes):
            folder = os.path.join(root, origin, name)
            if not is_dir(folder):
                continue
            _check_not_enclosing(root, folder)
            prefix = (origin, name) if origin else (name,)
            for parts, reason in _walk(folder):
                path, fs_path = _rel(prefix + parts)
                if reason is None and any(p.startswith(".") for p in parts):
                    reason = "hidden file"
                if reason is None:
                    tree.files.append(SourceFile(path, index, origin or "all", fs_path))
                    candidates[origin, index] += 1
                else:
                    tree.skipped.append((path, reason, name))
    # Everything outside the class folders: listed, never opened.
    outside = [((), root, origins if layout == TRAIN_VALIDATION else classes)]
    if layout == TRAIN_VALIDATION:
        outside += [((o,), os.path.join(root, o), classes) for o in origins]
    for prefix, folder, inside in outside:
        for parts, reason in _walk(folder, skip=inside):
            tree.skipped.append((_rel(prefix + parts)[0], reason or "not in a class folder", None))

    if not tree.files:
        raise IngestError(f"no files found in the class folders of '{printable(root)}'")
    for index, name in enumerate(classes):
        if layout == CLASS_FOLDERS and not candidates["", index]:
            raise IngestError(f"class {name!r} has no images (folder {name}/ holds no files)")
        if layout == TRAIN_VALIDATION:
            n_train, n_val = candidates["train", index], candidates["validation", index]
            if not n_train or not n_val:
                empty = "train" if not n_train else "validation"
                state = "is empty" if is_dir(os.path.join(root, empty, name)) else "is missing"
                raise IngestError(
                    f"class {name!r} has {n_train} files in train/ and {n_val} in validation/ "
                    f"({empty}/{name}/ {state}); every class needs images in both")
    paths = Counter([f.path for f in tree.files] + [p for p, _, _ in tree.skipped])
    clashes = sorted(p for p, n in paths.items() if n > 1)
    if clashes:
        raise IngestError(f"{len(clashes)} path(s) appear twice once names are made printable "
                          f"(a name that is not UTF-8 or has control characters), e.g. "
                          f"{clashes[0]!r}; rename one of them")
    tree.files.sort(key=lambda f: f.path)
    tree.skipped.sort(key=lambda s: s[0])
    return tree


# ---------------------------------------------------------------------------------------------
# Fingerprint


def fingerprint(tree: ImageTree, settings: SplitSettings) -> str:
    """Content fingerprint of the input (paths, labels, bytes) and the conversion settings.

    Candidates are read (streamed, at most settings.max_file_bytes each) and hashed; entries
    skipped at the scan count by path and reason only (they are never opened).

    Args:
      tree: the scan of the image folder.
      settings: the split settings, part of the fingerprint.

    Returns:
      The first 16 hex digits of a SHA-256.
    """
    h = hashlib.sha256()
    h.update(json.dumps({"version": CONVERSION_VERSION, "layout": tree.layout,
                         "classes": tree.classes, "settings": asdict(settings)}).encode())
    for path, reason, label_name in tree.skipped:
        h.update(f"{path}\0skipped:{label_name}:{reason}\n".encode())
    entries = [(f.path, f"{f.label}:{f.origin}") for f in tree.files]
    if _is_remote(tree.root):
        paths = [os.path.join(tree.root, os.fsdecode(f.fs_path)) for f in tree.files]
    else:
        paths = [os.path.join(os.fsencode(tree.root), f.fs_path) for f in tree.files]

    def hash_file(path: str | bytes) -> str:
        return _digest_source(path, settings.max_file_bytes)

    started, last = time.monotonic(), time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        for i, ((path, tag), digest) in enumerate(zip(entries, pool.map(hash_file, paths),
                                                      strict=True)):
            h.update(f"{path}\0{tag}\0{digest}\n".encode())
            if time.monotonic() - last > 5:
                last = time.monotonic()
                LOG.info("fingerprinting: %d/%d files", i + 1, len(entries))
    LOG.info("fingerprinted %d files in %.1fs", len(entries), time.monotonic() - started)
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Image headers: the decoded size, read before decoding


def _u16be(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 2], "big")


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_STANDALONE = {0x01, 0xD8, *range(0xD0, 0xD8)}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOF marker, walking the marker segments."""
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:  # stray bytes between segments: look for the next marker
            at = data.find(b"\xff", at)
            if at < 0:
                return None
            continue
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _JPEG_STANDALONE:
            at += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        if marker in _JPEG_SOF:
            if at + 9 > len(data):
                return None
            return _u16be(data, at + 7), _u16be(data, at + 5)
        at += 2 + _u16be(data, at + 2)
    return None


def _gif_pixels(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, frames, pixels of all frames) of a GIF, walking its blocks.

    The decoder reads every frame even when only the first is kept, so all of them count.
    A truncated or malformed file stops the walk (the decoder then refuses it).
    """
    if len(data) < 13:
        return None
    width, height = int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    at = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    frames = pixels = 0

    def skip_sub_blocks(at: int) -> int:
        while at < len(data) and data[at]:
            at += 1 + data[at]
        return at + 1

    while at < len(data):
        kind = data[at]
        if kind == 0x2C:  # image descriptor
            if at + 10 > len(data):
                break
            frames += 1
            pixels += (int.from_bytes(data[at + 5:at + 7], "little")
                       * int.from_bytes(data[at + 7:at + 9], "little"))
            packed = data[at + 9]
            at += 10 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)
            at = skip_sub_blocks(at + 1)  # LZW minimum code size, then the image data
        elif kind == 0x21:  # extension: label, then sub-blocks
            at = skip_sub_blocks(at + 2)
        else:  # trailer (0x3B) or garbage
            break
    return width, height, frames, pixels


def image_size(data: bytes, fmt: str) -> tuple[int, int, int] | None:
    """(width, height, pixels decoding allocates) from an image's header, without decoding.

    Args:
      data: the file's bytes.
      fmt: its format, as contract.features.image_format names it.

    Returns:
      The size, or None when the header holds none (the file is then undecodable). For a GIF
      the pixels are the larger of the screen and the sum of all frames.
    """
    if fmt == "png":
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return width, height, width * height
    if fmt == "jpeg":
        size = _jpeg_size(data)
        return None if size is None else (*size, size[0] * size[1])
    if fmt == "bmp":
        if len(data) < 26:
            return None
        width = abs(int.from_bytes(data[18:22], "little", signed=True))
        height = abs(int.from_bytes(data[22:26], "little", signed=True))
        return width, height, width * height
    if fmt == "gif":
        gif = _gif_pixels(data)
        if gif is None:
            return None
        width, height, _, pixels = gif
        return width, height, max(width * height, pixels)
    return None


# ---------------------------------------------------------------------------------------------
# The Beam transforms


def inspect_image(data: bytes, min_side: int, max_pixels: int = DEFAULT_SPLIT.max_image_pixels
                  ) -> tuple[dict | None, str | None]:
    """Validates an image: the size from its header first, then one decode.

    An image larger than max_pixels is refused from its header, before decoding (a small file
    can declare a huge image: a decompression bomb).

    Args:
      data: the file's bytes.
      min_side: the smallest allowed height and width, in pixels.
      max_pixels: the most pixels decoding may produce (width x height; all frames of a GIF).

    Returns:
      ({"format", "height", "width"}, None) for a usable image, else (None, a one-line human
      skip reason such as "undecodable jpeg" or "too large: 23000x23000 pixels (limit ...)").
    """
    if not data:
        return None, "empty file"
    fmt = features.image_format(data)
    if fmt is None:
        return None, f"not an image (not {features.IMAGE_FORMATS})"
    size = image_size(data, fmt)
    if size is None:
        return None, f"undecodable {fmt} (no image size in the header)"
    width, height, pixels = size
    if pixels > max_pixels:
        if pixels > width * height:
            return None, (f"too large: {pixels} pixels in all GIF frames "
                          f"(limit {max_pixels})")
        return None, f"too large: {width}x{height} pixels (limit {max_pixels})"
    try:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.OpError, ValueError) as e:
        LOG.debug("undecodable %s: %s", fmt, e)
        return None, f"undecodable {fmt}"
    height, width = int(image.shape[0]), int(image.shape[1])
    if min(height, width) < min_side:
        return None, f"too small ({width}x{height} px, minimum side {min_side})"
    return {"format": fmt, "height": height, "width": width}, None


class DecodeAndValidate(beam.DoFn):
    """Reads and decodes one file; emits a record, or a skip on the 'skipped' output."""

    SKIPPED = "skipped"

    def __init__(self, root: str, classes: list[str], settings: SplitSettings, total: int):
        self._root, self._classes, self._settings, self._total = root, classes, settings, total
        self._seen = 0

    def _skip(self, source: SourceFile, reason: str) -> beam.pvalue.TaggedOutput:
        beam.metrics.Metrics.counter("ingest", "skipped").inc()
        return beam.pvalue.TaggedOutput(
            self.SKIPPED, (source.path, reason, self._classes[source.label]))

    def process(self, source: SourceFile) -> Iterator:
        """Yields the record of a decodable file, or (path, reason, class) on the skipped output."""
        self._seen += 1
        if self._seen % 250 == 0:
            LOG.info("decoded %d/%d files (this worker)", self._seen, self._total)
        if _is_remote(self._root):
            path = os.path.join(self._root, os.fsdecode(source.fs_path))
        else:
            path = os.path.join(os.fsencode(self._root), source.fs_path)
        data, reason = read_source(path, self._settings.max_file_bytes)
        if reason is None:
            info, reason = inspect_image(data, self._settings.min_image_side,
                                         self._settings.max_image_pixels)
        if reason:
            yield self._skip(source, reason)
            return
        beam.metrics.Metrics.counter("ingest", "decoded").inc()
        yield {"source": source, "data": data, "sha256": hashlib.sha256(data).hexdigest(),
               "label_name": self._classes[source.label], **info}


_ORIGIN_PRIORITY = {"train": 0, "all": 0, "validation": 1}


def keep_first_copy(item: tuple[str, Iterable[dict]]) -> Iterator:
    """Of records with identical content keeps one (train copy first, then by path).

    Args:
      item: (sha256, the decoded records with that content), as GroupByKey emits it.

    Yields:
      The kept record, then (path, reason, class) on the skipped output for each other copy.
    """
    _, records = item
    records = sorted(records, key=lambda r: (_ORIGIN_PRIORITY[r["source"].origin],
                                             r["source"].path))
    kept = records[0]
    yield kept
    for other in records[1:]:
        reason = f"duplicate of {kept['source'].path}"
        if other["label_name"] != kept["label_name"]:
            reason += f" (which is labelled {kept['label_name']})"
        yield beam.pvalue.TaggedOutput(DecodeAndValidate.SKIPPED,
                                       (other["source"].path, reason, other["label_name"]))


def assign_splits(item: tuple[tuple[str, int], Iterable[dict]],
                  settings: SplitSettings) -> Iterator[tuple[str, dict]]:
    """Deterministic, per-class split: records ordered by content hash, cut at the fractions.

    Args:
      item: ((origin, class index), the records of that class from that folder).
      settings: the split fractions.

    Yields:
      (split name, record) for each record.
    """
    (origin, _), records = item
    records = sorted(records, key=lambda r: r["sha256"])
    n = len(records)
    for rank, record in enumerate(records):
        q = rank / n
        if origin == "train":
            split = "train"
        elif origin == "validation":
            split = "test" if q < settings.validation_test_fraction else "eval"
        elif q < settings.test_fraction:
            split = "test"
        elif q < settings.test_fraction + settings.eval_fraction:
            split = "eval"
        else:
            split = "train"
        yield split, record


def _feature(kind: str, value: str | bytes | int) -> tf.train.Feature:
    """A one-value feature of the kind contract.features.KINDS gives (str is UTF-8 encoded)."""
    if kind == "int64":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    value = value.encode() if isinstance(value, str) else value
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def to_example(record: dict) -> bytes:
    """The serialized tf.Example of one kept image (format in contract/features.py).

    Args:
      record: a record from DecodeAndValidate (source, data, sha256, label_name, format,
        height, width).

    Returns:
      The serialized tf.Example.
    """
    source = record["source"]
    values = {features.IMAGE_KEY: record["data"], features.LABEL_KEY: source.label,
              features.LABEL_NAME_KEY: record["label_name"], features.PATH_KEY: source.path,
              features.SHA256_KEY: record["sha256"], features.HEIGHT_KEY: record["height"],
              features.WIDTH_KEY: record["width"], features.FORMAT_KEY: record["format"]}
    example = tf.train.Example(features=tf.train.Features(feature={
        key: _feature(features.KINDS[key], value) for key, value in values.items()}))
    return example.SerializeToString()


def build_report(tree: ImageTree, fp: str, outcomes: list[dict]) -> dict:
    """The ingestion report: one entry per input file, and counts per split/class/reason.

    ``per_class`` reconciles each class: its inputs (every entry in its folders) are the
    written plus the skipped ones. A reason's count key is its text before ":" or " (".

    Args:
      tree: the scan of the image folder.
      fp: the input's fingerprint.
      outcomes: one {"path", "status", ...} per input file, written or skipped.

    Returns:
      The report, as written to ingestion_report.json.
    """
    counts: dict[str, Counter] = defaultdict(Counter)
    skipped: Counter = Counter()
    class_skipped: Counter = Counter()
    for o in outcomes:
        if o["status"] == "written":
            counts[o["split"]][o["label_name"]] += 1
        else:
            skipped[reason_key(o["reason"])] += 1
            if o.get("label_name") is not None:
                class_skipped[o["label_name"]] += 1
    per_split = {s: {c: counts[s][c] for c in tree.classes} for s in features.SPLITS}
    inputs = tree.inputs_per_class()
    per_class = {c: {"inputs": inputs[c], "written": sum(counts[s][c] for s in features.SPLITS),
                     "skipped": class_skipped[c]} for c in tree.classes}
    return {
        "root": printable(tree.root),
        "layout": tree.layout,
        "classes": tree.classes,
        "fingerprint": fp,
        "total_files": len(outcomes),
        "written": sum(sum(c.values()) for c in counts.values()),
        "skipped": sum(skipped.values()),
        "per_split": per_split,
        "per_split_total": {s: sum(per_split[s].values()) for s in features.SPLITS},
        "skipped_by_reason": dict(sorted(skipped.items())),
        "per_class": per_class,
        "outside_class_folders": sum(1 for o in outcomes if o["status"] == "skipped"
                                     and o.get("label_name") is None),
        "files": sorted(outcomes, key=lambda o: o["path"]),
    }


def _outcome_written(split_record: tuple[str, dict]) -> dict:
    split, r = split_record
    return {"path": r["source"].path, "status": "written", "split": split,
            "label_name": r["label_name"], "sha256": r["sha256"]}


def _outcome_skipped(skip: tuple[str, str, str | None]) -> dict:
    path, reason, label_name = skip
    outcome = {"path": path, "status": "skipped", "reason": reason}
    if label_name is not None:
        outcome["label_name"] = label_name
    return outcome


def reason_key(reason: str) -> str:
    """A skip reason's count key in the report: its text before ":" or " (".

    Args:
      reason: a skip reason, e.g. "too large: 23000x23000 pixels (limit 40000000)".

    Returns:
      The key, e.g. "too large".
    """
    return reason.split(":")[0].split(" (")[0]


class _WriteReport(beam.DoFn):
    def __init__(self, tree: ImageTree, fp: str, out_dir: str):
        self._tree, self._fp, self._out_dir = tree, fp, out_dir

    def process(self, outcomes: list[dict]) -> Iterator[dict]:
        """Writes the report of all outcomes to the output folder and yields it."""
        report = build_report(self._tree, self._fp, outcomes)
        with tf.io.gfile.GFile(os.path.join(self._out_dir, REPORT_FILE), "w") as f:
            json.dump(report, f, indent=1)
        yield report


def build_conversion(p: beam.Pipeline, tree: ImageTree, settings: SplitSettings, fp: str,
                     out_dir: str) -> None:
    """Adds the conversion to a Beam pipeline: decode, dedupe, split, write, report.

    Args:
      p: the pipeline to add the transforms to.
      tree: the scan of the image folder.
      settings: the split, size and sharding settings.
      fp: the input's fingerprint, recorded in the report.
      out_dir: where the split folders and the report are written.
    """
    decoded = (
        p
        | "ListFiles" >> beam.Create(tree.files)
        | "Reshuffle" >> beam.Reshuffle()
        | "DecodeAndValidate" >> beam.ParDo(
            DecodeAndValidate(tree.root, tree.classes, settings, len(tree.files))
        ).with_outputs(DecodeAndValidate.SKIPPED, main="ok"))
    unique = (
        decoded.ok
        | "KeyByContent" >> beam.Map(lambda r: (r["sha256"], r))
        | "GroupByContent" >> beam.GroupByKey()
        | "KeepFirstCopy" >> beam.FlatMap(keep_first_copy).with_outputs(
            DecodeAndValidate.SKIPPED, main="ok"))
    split = (
        unique.ok
        | "KeyByOriginClass" >> beam.Map(lambda r: ((r["source"].origin, r["source"].label), r))
        | "GroupByOriginClass" >> beam.GroupByKey()
        | "AssignSplits" >> beam.FlatMap(assign_splits, settings))
    for name in features.SPLITS:
        _ = (
            split
            | f"Only{name}" >> beam.Filter(lambda sr, n=name: sr[0] == n)
            | f"ToExample{name}" >> beam.Map(lambda sr: to_example(sr[1]))
            | f"Write{name}" >> beam.io.WriteToTFRecord(
                os.path.join(out_dir, name, "data"), file_name_suffix=".tfrecord",
                num_shards=settings.num_shards))
    skipped = (
        (decoded[DecodeAndValidate.SKIPPED], unique[DecodeAndValidate.SKIPPED],
         p | "SkippedAtScan" >> beam.Create(tree.skipped))
        | "AllSkipped" >> beam.Flatten())
    _ = (
        (split | "Written" >> beam.Map(_outcome_written),
         skipped | "Skipped" >> beam.Map(_outcome_skipped))
        | "AllOutcomes" >> beam.Flatten()
        | "Gather" >> beam.combiners.ToList()
        | "WriteReport" >> beam.ParDo(_WriteReport(tree, fp, out_dir)))


# ---------------------------------------------------------------------------------------------
# Entry point


def convert_image_tree(root: str, tfrecords_dir: str, settings: SplitSettings | None = None,
                       beam_args: list[str] | None = None) -> IngestResult:
    """Converts root into <tfrecords_dir>/<fingerprint>/ unless that conversion already exists.

    Args:
      root: the image folder.
      tfrecords_dir: the parent folder of the conversions.
      settings: the split settings; the defaults when None.
      beam_args: Beam pipeline arguments; an in-memory local runner when None.

    Returns:
      The output folder, the report, whether it was reused, and the wall time.

    Raises:
      IngestError: the image folder cannot be converted (see scan_image_tree), or a class has
        no usable image once converted (then nothing is marked complete).
      RuntimeError: the report does not account for every input file once.
    """
    settings = settings or SplitSettings()
    root = os.path.abspath(root) if "://" not in root else root
    started = time.monotonic()
    tree = scan_image_tree(root)
    LOG.info("found %d candidate images in %d classes %s (%s layout), %d entries skipped",
             len(tree.files), len(tree.classes), tree.classes, tree.layout, len(tree.skipped))
    fp = fingerprint(tree, settings)
    out_dir = os.path.join(tfrecords_dir, fp)
    if tf.io.gfile.exists(os.path.join(out_dir, COMPLETE_MARKER)):
        with tf.io.gfile.GFile(os.path.join(out_dir, REPORT_FILE)) as f:
            report = json.load(f)
        LOG.info("input unchanged (fingerprint %s): reusing %s", fp, out_dir)
        return IngestResult(out_dir, report, True, time.monotonic() - started)
    if tf.io.gfile.exists(out_dir):
        tf.io.gfile.rmtree(out_dir)  # an interrupted earlier conversion
    tf.io.gfile.makedirs(out_dir)
    with beam.Pipeline(argv=beam_args or beam_pipeline_args()) as p:
        build_conversion(p, tree, settings, fp, out_dir)
    with tf.io.gfile.GFile(os.path.join(out_dir, REPORT_FILE)) as f:
        report = json.load(f)
    check_accounting(tree, report)
    check_every_class_written(report)
    with tf.io.gfile.GFile(os.path.join(out_dir, LABELS_FILE), "w") as f:
        f.write(format_labels(tree.classes))
    with tf.io.gfile.GFile(os.path.join(out_dir, COMPLETE_MARKER), "w") as f:
        f.write(fp)
    LOG.info("converted in %.1fs: %s", time.monotonic() - started, summarize(report))
    return IngestResult(out_dir, report, False, time.monotonic() - started)


def check_accounting(tree: ImageTree, report: dict) -> None:
    """Every input file appears exactly once in the report, and each class reconciles.

    Args:
      tree: the scan of the image folder.
      report: the ingestion report written by the conversion.

    Raises:
      RuntimeError: the report's paths are not exactly the scanned entries, each once, or a
        class's inputs are not its written plus its skipped files.
    """
    listed = sorted([f.path for f in tree.files] + [p for p, _, _ in tree.skipped])
    reported = sorted(o["path"] for o in report["files"])
    if listed != reported:
        missing = sorted(set(listed) - set(reported))[:5]
        extra = sorted(set(reported) - set(listed))[:5]
        raise RuntimeError(f"ingestion report does not account for every file once: "
                           f"missing {missing}, unexpected {extra}")
    inputs = tree.inputs_per_class()
    per_class: dict[str, Counter] = defaultdict(Counter)
    for o in report["files"]:
        if o.get("label_name") is not None:
            per_class[o["label_name"]][o["status"]] += 1
    for name in tree.classes:
        counted = report["per_class"][name]
        written, skipped = per_class[name]["written"], per_class[name]["skipped"]
        if not (inputs[name] == counted["inputs"] == written + skipped
                and counted["written"] == written and counted["skipped"] == skipped):
            raise RuntimeError(
                f"ingestion report does not reconcile class {name!r}: {inputs[name]} inputs, "
                f"{written} written + {skipped} skipped (report: {counted})")


def check_every_class_written(report: dict) -> None:
    """Each class has at least one written image (raises IngestError if not).

    Args:
      report: the ingestion report written by the conversion.

    Raises:
      IngestError: a class's files were all skipped (undecodable, too large, duplicates...).
    """
    for name, counts in report["per_class"].items():
        if not counts["written"]:
            reasons = Counter(reason_key(o["reason"]) for o in report["files"]
                              if o.get("label_name") == name and o["status"] == "skipped")
            shown = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items()))
            raise IngestError(f"class {name!r} has no usable images: all {counts['inputs']} "
                              f"files were skipped ({shown})")


def summarize(report: dict) -> str:
    """One line: written per split and skipped per reason.

    Args:
      report: an ingestion report.

    Returns:
      The summary line.
    """
    splits = ", ".join(f"{s} {n}" for s, n in report["per_split_total"].items())
    text = f"{report['written']} written ({splits}), {report['skipped']} skipped"
    if report["skipped_by_reason"]:
        text += " [" + ", ".join(f"{r}: {n}" for r, n in report["skipped_by_reason"].items()) + "]"
    return text


def main(argv: list[str] | None = None) -> int:
    """CLI: convert an image folder (e.g. as a standalone Beam job on Dataflow).

    Args:
      argv: --data-dir, --output-dir, the size limits and any Beam pipeline arguments;
        sys.argv[1:] when None.

    Returns:
      The exit status: 0, or 2 when the image folder cannot be converted.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--output-dir", required=True, help="TFRecords parent folder")
    parser.add_argument("--max-image-pixels", type=int, default=DEFAULT_SPLIT.max_image_pixels,
                        help="Images with more pixels (read from the header) are skipped "
                             "without decoding.")
    parser.add_argument("--max-file-bytes", type=int, default=DEFAULT_SPLIT.max_file_bytes,
                        help="Larger files are skipped without reading them.")
    args, beam_args = parser.parse_known_args(argv)
    for flag in ("max_image_pixels", "max_file_bytes"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = SplitSettings(max_image_pixels=args.max_image_pixels,
                             max_file_bytes=args.max_file_bytes)
    try:
        result = convert_image_tree(args.data_dir, args.output_dir, settings,
                                    beam_args=beam_args or None)
    except IngestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{printable(result.output_dir)}: {summarize(result.report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
