"""Scanning an image folder: its layout, its classes, the candidate images and the entries
skipped without opening them (checked before anything is read or written)."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import tensorflow as tf

from ingestion.names import is_remote, printable
from ingestion.reasons import IngestError, op_reason, os_reason
from ingestion.settings import IMBALANCE_WARNING_RATIO
from ingestion.walk import visible, walk

LOG = logging.getLogger("ingestion")
TRAIN_VALIDATION = "train_validation"
CLASS_FOLDERS = "class_folders"


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

    def location(self, root: str) -> str | bytes:
        """Where to open the file: a URL below a remote root, else the local path as bytes.

        Args:
          root: the image folder the file was found in.

        Returns:
          The URL (str) or the local path (bytes, so any name can be opened).
        """
        if is_remote(root):
            return os.path.join(root, os.fsdecode(self.fs_path))
        return os.path.join(os.fsencode(root), self.fs_path)


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
    warnings: list[str] = field(default_factory=list)  # e.g. class imbalance

    def inputs_per_class(self) -> dict[str, int]:
        """Every entry in each class's folders (candidates and entries skipped at the scan).

        Returns:
          {class name: number of entries}, in class order.
        """
        counts = Counter(self.classes[f.label] for f in self.files)
        counts.update(c for _, _, c in self.skipped if c is not None)
        return {c: counts[c] for c in self.classes}


def _class_dirs(folder: str) -> list[str]:
    """The visible subfolders of folder (symlinks to folders included), sorted."""
    try:
        if is_remote(folder):
            names = [n.rstrip("/") for n in tf.io.gfile.listdir(folder)]
            return [n for n in visible(names) if tf.io.gfile.isdir(os.path.join(folder, n))]
        return [n for n in visible(os.listdir(folder)) if os.path.isdir(os.path.join(folder, n))]
    except OSError as e:
        raise IngestError(f"cannot list '{printable(folder)}': {os_reason(e)}") from None
    except tf.errors.OpError as e:
        raise IngestError(f"cannot list '{printable(folder)}': {op_reason(e)}") from None


def _check_class_names(parent: str, names: list[str]) -> None:
    """Class names become labels (labels.txt, the model): printable UTF-8 or an IngestError."""
    for name in names:
        if printable(name) != name:
            raise IngestError(
                f"class folder '{printable(os.path.join(parent, name))}' has a name that is not "
                "printable UTF-8 (class names become the model's labels); rename it")


def _check_not_enclosing(root: str, folder: str) -> None:
    """A class folder that is (a symlink to) the root or an enclosing folder is an error."""
    if is_remote(root):
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


def imbalance_warnings(classes: list[str], candidates: Counter, origins: list[str],
                       ratio: float = IMBALANCE_WARNING_RATIO) -> list[str]:
    """A warning per folder whose largest class has more than ratio times the files of its
    smallest (the splits cut each class at the same fractions, so they inherit it).

    Args:
      classes: the class names, in index order.
      candidates: candidate files per (origin, class index).
      origins: the folders: "train" and "validation", or "" for the class-folder layout.
      ratio: the largest tolerated largest : smallest ratio.

    Returns:
      E.g. "class imbalance in train/: cats 400, dogs 30 (13.3:1, above 10:1)".
    """
    warnings = []
    for origin in origins:
        counts = {name: candidates[origin, index] for index, name in enumerate(classes)}
        largest, smallest = max(counts.values()), min(counts.values())
        if smallest and largest > ratio * smallest:
            where = f"{origin}/" if origin else "the class folders"
            shown = ", ".join(f"{name} {n}" for name, n in counts.items())
            warnings.append(f"class imbalance in {where}: {shown} "
                            f"({largest / smallest:.1f}:1, above {ratio:g}:1)")
    return warnings


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
    is_dir = tf.io.gfile.isdir if is_remote(root) else os.path.isdir
    if not is_dir(root):
        raise IngestError(
            f"image folder '{printable(root)}' does not exist or is not a directory")
    layout, origins, classes = _find_layout(root)
    tree = ImageTree(root=root, layout=layout, classes=classes, files=[])
    candidates = _list_class_folders(tree, origins, is_dir)
    _list_outside_class_folders(tree, origins)
    _check_every_class_has_images(tree, candidates, is_dir)
    tree.warnings = imbalance_warnings(classes, candidates, origins)
    for warning in tree.warnings:
        LOG.warning("%s", warning)
    _check_paths_unique(tree)
    tree.files.sort(key=lambda f: f.path)
    tree.skipped.sort(key=lambda s: s[0])
    return tree


def _find_layout(root: str) -> tuple[str, list[str], list[str]]:
    """(layout, origins, classes) of root; raises IngestError for neither layout, a missing
    train/ or validation/, a validation/ class train/ lacks, bad names or < 2 classes."""
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
    return layout, origins, classes


def _list_class_folders(tree: ImageTree, origins: list[str],
                        is_dir: Callable[[str], bool]) -> Counter:
    """Adds each class folder's files (candidates) and skipped entries to tree; returns the
    candidates counted by (origin, class index)."""
    candidates: Counter = Counter()
    for origin in origins:
        for index, name in enumerate(tree.classes):
            folder = os.path.join(tree.root, origin, name)
            if not is_dir(folder):
                continue
            _check_not_enclosing(tree.root, folder)
            prefix = (origin, name) if origin else (name,)
            for parts, reason in walk(folder):
                path, fs_path = _rel(prefix + parts)
                if reason is None and any(p.startswith(".") for p in parts):
                    reason = "hidden file"
                if reason is None:
                    tree.files.append(SourceFile(path, index, origin or "all", fs_path))
                    candidates[origin, index] += 1
                else:
                    tree.skipped.append((path, reason, name))
    return candidates


def _list_outside_class_folders(tree: ImageTree, origins: list[str]) -> None:
    """Adds everything outside the class folders to tree's skipped entries, never opened."""
    two_folders = tree.layout == TRAIN_VALIDATION
    outside = [((), tree.root, origins if two_folders else tree.classes)]
    if two_folders:
        outside += [((o,), os.path.join(tree.root, o), tree.classes) for o in origins]
    for prefix, folder, inside in outside:
        for parts, reason in walk(folder, skip=inside):
            tree.skipped.append((_rel(prefix + parts)[0], reason or "not in a class folder", None))


def _check_every_class_has_images(tree: ImageTree, candidates: Counter,
                                  is_dir: Callable[[str], bool]) -> None:
    """Raises IngestError when no class folder holds a file, or a class (in either folder of
    the train/validation layout) holds none."""
    if not tree.files:
        raise IngestError(f"no files found in the class folders of '{printable(tree.root)}'")
    for index, name in enumerate(tree.classes):
        if tree.layout == CLASS_FOLDERS and not candidates["", index]:
            raise IngestError(f"class {name!r} has no images (folder {name}/ holds no files)")
        if tree.layout == TRAIN_VALIDATION:
            n_train, n_val = candidates["train", index], candidates["validation", index]
            if not n_train or not n_val:
                empty = "train" if not n_train else "validation"
                state = ("is empty" if is_dir(os.path.join(tree.root, empty, name))
                         else "is missing")
                raise IngestError(
                    f"class {name!r} has {n_train} files in train/ and {n_val} in validation/ "
                    f"({empty}/{name}/ {state}); every class needs images in both")


def _check_paths_unique(tree: ImageTree) -> None:
    """Raises IngestError when two entries' printable paths are the same."""
    paths = Counter([f.path for f in tree.files] + [p for p, _, _ in tree.skipped])
    clashes = sorted(p for p, n in paths.items() if n > 1)
    if clashes:
        raise IngestError(f"{len(clashes)} path(s) appear twice once names are made printable "
                          f"(a name that is not UTF-8 or has control characters), e.g. "
                          f"{clashes[0]!r}; rename one of them")
