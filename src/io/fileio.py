"""Atomic file writes: every output goes to a temporary name beside its target and is renamed into place, so
a crash or an error never leaves a half-written file (and an existing file is only replaced by a whole one)."""
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

PathLike = str | os.PathLike[str]


@contextmanager
def atomic_path(path: PathLike, suffix: str = ".tmp", make_parents: bool = False) -> Iterator[str]:
    """Yield a temporary file name in ``path``'s folder; when the block ends without error the file replaces
    ``path`` (``os.replace``), otherwise it is removed. ``suffix`` matters to writers that append their own
    extension (``mindspore.save_checkpoint`` adds ``.ckpt`` to any other name)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if make_parents:
        os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_bytes_atomic(path: PathLike, data: bytes, make_parents: bool = False) -> None:
    with atomic_path(path, make_parents=make_parents) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text_atomic(path: PathLike, text: str, make_parents: bool = False) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), make_parents=make_parents)


def write_json_atomic(path: PathLike, obj: object, make_parents: bool = True) -> None:
    """``obj`` as indented JSON; missing parent folders are created by default."""
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n", make_parents=make_parents)
