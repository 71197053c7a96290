"""Scanning ``<split>/<class>/`` folders for images, as torchvision's ImageFolder does, safely.

The order is torchvision's (``find_classes`` and ``make_dataset``: classes sorted, then every
folder below a class sorted by path, then its files sorted), so a run folder's data
fingerprint stays the same. Two things differ on purpose:

- A link to a folder is followed only when it stays inside its class folder and does not lead
  back to a folder it is inside of: ``ln -s .. train/cat/up`` would otherwise pull every other
  class's images in under "cat" (and loop until the path is too long). The links skipped are
  named in one warning line.
- Hidden entries (names starting with ``.``: ``.ipynb_checkpoints``, ``.DS_Store``, macOS's
  ``._photo.jpg``) are neither classes nor images, and only regular files are images (a named
  pipe would block the reader).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from qpm.text import printable

log = logging.getLogger("qpm.data")


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def find_classes(folder: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
    """The class folders of ``folder`` (sorted, hidden ones left out) and their indices;
    FileNotFoundError when there are none (as torchvision's)."""
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries if e.is_dir() and not is_hidden(e.name))
    if not names:
        raise FileNotFoundError(f"Couldn't find any class folder in {folder}.")
    return names, {name: i for i, name in enumerate(names)}


@dataclass
class Scan:
    """What :func:`class_files` found below one class folder."""

    files: list[str] = field(default_factory=list)
    skipped_links: list[str] = field(default_factory=list)  # folder links not followed


def class_files(class_dir: str, extensions: tuple[str, ...]) -> Scan:
    """Every image file below ``class_dir`` in torchvision's order; see the module docstring
    for the folder links that are not followed."""
    top = os.path.realpath(class_dir)
    scan = Scan()
    folders: list[tuple[str, list[str]]] = []
    pending = [(class_dir, top, frozenset([top]))]  # path, its real path, real paths above it
    while pending:
        root, real, above = pending.pop()
        try:
            with os.scandir(root) as it:
                entries = list(it)
        except OSError:  # unreadable: skipped, as os.walk does
            continue
        names = []
        for entry in entries:
            if is_hidden(entry.name):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                continue
            if is_dir:
                target = (os.path.realpath(entry.path) if entry.is_symlink()
                          else os.path.join(real, entry.name))
                inside = target == top or target.startswith(top + os.sep)
                if not inside or target in above:
                    scan.skipped_links.append(entry.path)
                    continue
                pending.append((entry.path, target, above | {target}))
            elif entry.is_file() and entry.name.lower().endswith(extensions):
                names.append(entry.name)
        folders.append((root, sorted(names)))
    for root, names in sorted(folders):
        scan.files += [os.path.join(root, name) for name in names]
    return scan


def image_samples(split_dir: str, index: dict[str, int], extensions: tuple[str, ...]
                  ) -> list[tuple[str, int]]:
    """(path, class index) of every image of the classes ``index`` names under ``split_dir``
    (a class without a folder there has none); one warning line per class whose folder
    links were not followed."""
    samples = []
    for name in sorted(index):
        class_dir = os.path.join(split_dir, name)
        if not os.path.isdir(class_dir):
            continue
        scan = class_files(class_dir, extensions)
        samples += [(path, index[name]) for path in scan.files]
        if scan.skipped_links:
            first = printable(os.path.relpath(scan.skipped_links[0], class_dir))
            log.warning(f"{printable(class_dir)}: not following {len(scan.skipped_links)} "
                        f"folder link(s) that lead out of the class folder or back into it "
                        f"(e.g. {first}); images there are not used for this class")
    return samples
