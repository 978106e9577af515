"""``source: text_directory`` — labelled text files in one sub-folder per class.

The aclImdb layout: ``<path>/train/<class>/*.txt`` and ``<path>/test/<class>/*.txt``.
``path`` is a folder or a ``.tar``/``.tar.gz``/``.tar.xz`` archive, read member by member
without unpacking to disk; an archive may wrap the layout in a top folder (``aclImdb/``).
Files are read in sorted name order so a run is reproducible; classes not listed in
``data.classes`` (aclImdb's ``train/unsup``) are skipped.
"""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath

import numpy as np

from dlrun.data.dataset import Dataset
from dlrun.errors import DataError

SUFFIX = ".txt"


def load_text_directory(spec, base_dir: Path) -> Dataset:
    path = (Path(base_dir) / Path(spec.path).expanduser()).resolve()
    if path.is_dir():
        tree, where = _folder_tree(path, spec), "folder"
    elif path.is_file():
        tree, where = _archive_tree(path, spec), "archive"
    else:
        raise DataError(f"data.path: no such folder or archive: {path}")
    classes = _classes(spec, tree, path)
    x_train, y_train = _part(spec, tree, spec.train, classes, path)
    x_test = y_test = None
    if spec.test is not None:
        x_test, y_test = _part(spec, tree, spec.test, classes, path)
    info = {"path": str(path), "format": where, "classes": classes}
    if tree.root:
        info["archive_root"] = tree.root
    return Dataset(x_train, y_train, x_test, y_test, name=path.name, info=info)


class _Tree:
    """``parts[part][class]`` → sorted ``[(file name, reader)]``; ``root``: the archive's top folder."""

    def __init__(self, root: str = ""):
        self.root = root
        self.top_level: list[str] = []  # an archive's top entries, to explain a wrong layout
        self.parts: dict[str, dict[str, list]] = {}

    def add(self, part: str, cls: str, name: str, read) -> None:
        self.parts.setdefault(part, {}).setdefault(cls, []).append((name, read))


def _folder_tree(path: Path, spec) -> _Tree:
    tree = _Tree()
    for part in {spec.train, spec.test} - {None}:
        folder = path / part
        if not folder.is_dir():
            continue
        for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            tree.parts.setdefault(part, {})[class_dir.name] = [
                (f.name, f.read_bytes) for f in sorted(class_dir.glob("*" + SUFFIX)) if f.is_file()]
    return tree


def _archive_tree(path: Path, spec) -> _Tree:
    """Read every ``<root>/<part>/<class>/*.txt`` member in one pass (xz cannot seek)."""
    wanted = {spec.train, spec.test} - {None}
    found: dict[str, dict[tuple[str, str, str], bytes]] = {}  # root → {(part, class, name): bytes}
    top_level: set[str] = set()
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                parts = tuple(p for p in PurePosixPath(member.name).parts if p != "/")  # "./x" → ("x",)
                if parts:
                    top_level.add(parts[0])
                if not member.isfile() or len(parts) < 3 or not parts[-1].endswith(SUFFIX):
                    continue
                root, part, cls, name = "/".join(parts[:-3]), parts[-3], parts[-2], parts[-1]
                if part not in wanted or (spec.classes is not None and cls not in spec.classes):
                    continue
                data = archive.extractfile(member).read()
                found.setdefault(root, {})[(part, cls, name)] = data
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DataError(f"data.path: {path} is neither a folder nor a readable .tar/.tar.gz/.tar.xz "
                        f"archive ({error})") from error
    # The layout's root: the shallowest folder holding the training part (`aclImdb/` or none).
    roots = sorted((r for r, files in found.items() if any(p == spec.train for p, _, _ in files)),
                   key=lambda r: (r.count("/"), r))
    tree = _Tree(roots[0] if roots else "")
    files = found.get(tree.root, {})
    tree.top_level = sorted(top_level)
    for (part, cls, name) in sorted(files):
        tree.add(part, cls, name, lambda data=files[(part, cls, name)]: data)
    return tree


def _classes(spec, tree: _Tree, path: Path) -> list[str]:
    train = tree.parts.get(spec.train)
    if not train:
        raise DataError(f"data.train: no folder '{spec.train}' with class sub-folders of {SUFFIX} files in "
                        f"{_place(path, tree)}; {_existing(path, tree)}")
    if spec.classes is not None:
        return list(spec.classes)
    return sorted(train)


def _part(spec, tree: _Tree, part: str, classes: list[str], path: Path) -> tuple[np.ndarray, np.ndarray]:
    key = "train" if part == spec.train else "test"
    folders = tree.parts.get(part)
    if not folders:
        fix = " or set `data.test: null` when there is no test part" if key == "test" else ""
        raise DataError(f"data.{key}: no folder '{part}' in {_place(path, tree)}{fix}; {_existing(path, tree)}")
    texts: list[str] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        files = folders.get(cls)
        if not files:
            raise DataError(f"data.classes: no {SUFFIX} files in '{part}/{cls}' of {_place(path, tree)}; the "
                            f"class folders there are {sorted(folders)}")
        for name, read in files:
            try:
                texts.append(read().decode(spec.encoding))
            except UnicodeDecodeError as error:
                raise DataError(f"{part}/{cls}/{name} in {path} is not {spec.encoding} text ({error}); set "
                                f"data.encoding (e.g. latin-1)") from error
            except LookupError as error:
                raise DataError(f"data.encoding: {error}") from error
            except OSError as error:
                raise DataError(f"{part}/{cls}/{name} in {path} cannot be read: {error.strerror or error}") from error
        labels += [label] * len(files)
    x = np.empty(len(texts), dtype=object)
    x[:] = texts
    return x, np.asarray(labels, dtype=np.int64)


def _place(path: Path, tree: _Tree) -> str:
    return f"{path} (under its top folder '{tree.root}/')" if tree.root else str(path)


def _existing(path: Path, tree: _Tree) -> str:
    if path.is_dir():
        names = sorted(p.name for p in path.iterdir() if p.is_dir())
        return f"the folders there are {names}" if names else "it holds no folders"
    if tree.parts:
        return f"the parts found are {sorted(tree.parts)}"
    return (f"the archive's top-level entries are {tree.top_level}; expected [<root>/]<part>/<class>/*{SUFFIX}"
            if tree.top_level else "the archive is empty")
