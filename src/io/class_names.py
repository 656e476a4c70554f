"""Class names: which name each output of a model stands for, as one list that travels with the weights.

Class ``i`` of a model is the ``i``-th name. A list comes from a text file (one name per line), from a model
file's metadata under :data:`CLASS_NAMES_KEY` (a JSON string entry of a ``.ckpt``, a list in the ``data_info``
JSON of an exported MindIR or ONNX file, a list in a training state's record), from a dataset's sorted class
folders (the labels training used), or from the bundled ImageNet-1k list. Every list is checked the same way:
each name a non-empty string on one line, no name twice, and as many names as the model has classes.
"""
import json
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["CLASS_NAMES_KEY", "IMAGENET_CLASSES_FILE", "IMAGENET_NUM_CLASSES", "MissingClassNames",
           "check_class_names", "load_class_names", "imagenet_class_names", "names_to_json", "names_from_json",
           "describe_difference"]

CLASS_NAMES_KEY = "class_names"  # the metadata key in checkpoints, training states and exported files
# 1000 lines in the standard index order: the WordNet lemmas of the sorted ILSVRC-2012 synsets (timm's files),
# the two synsets lemmatised "crane" told apart as "crane (bird)" and "crane (machine)".
IMAGENET_CLASSES_FILE = Path(__file__).resolve().parent / "resources" / "imagenet_classes.txt"
IMAGENET_NUM_CLASSES = 1000
_SHOWN = 60  # characters of a bad name shown in a message


class MissingClassNames(ValueError):
    """No source names the model's classes."""


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def check_class_names(names: object, source: str, num_classes: int | None = None,
                      by_line: bool = False) -> list[str]:
    """``names`` as a list of strings, or a one-line ValueError naming ``source`` and the first problem: not a
    list, a name that is not a non-empty one-line string, a name given twice, or (with ``num_classes``) another
    count than the model's classes. ``by_line`` numbers positions as the lines of a file (1-based)."""
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise ValueError(f"{source}: expected a list of class names, got {type(names).__name__}")

    def at(i: int) -> str:
        return f"line {i + 1}" if by_line else f"class {i}"

    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip() or "\n" in name or "\r" in name:
            raise ValueError(f"{source}: {at(i)} is not a usable class name ({_shown(name)}): expected a "
                             f"non-empty string on one line")
        if name in first:
            raise ValueError(f"{source}: class name {_shown(name)} is given twice ({at(first[name])} and {at(i)}); "
                             f"each class needs its own name")
        first[name] = i
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(f"{source}: {len(names)} class names, but the model has {num_classes} classes")
    return list(names)


def load_class_names(path: str | os.PathLike, num_classes: int | None = None) -> list[str]:
    """One class name per line (trailing whitespace and trailing empty lines ignored), checked by
    :func:`check_class_names`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: class names file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file of class names ({e.reason} at byte {e.start})") from None
    names = [line.rstrip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    return check_class_names(names, str(path), num_classes, by_line=True)


def imagenet_class_names() -> list[str]:
    """The ImageNet-1k names in the standard index order."""
    return load_class_names(IMAGENET_CLASSES_FILE, IMAGENET_NUM_CLASSES)


def names_to_json(names: Sequence[str], source: str) -> str:
    """The checked names as one JSON string (how a ``.ckpt`` stores them: its metadata entries are scalars)."""
    return json.dumps(check_class_names(names, source), ensure_ascii=False)


def names_from_json(text: object, source: str) -> list[str]:
    """The inverse of :func:`names_to_json`; anything else is a one-line ValueError naming ``source``."""
    if not isinstance(text, str):
        raise ValueError(f"{source}: expected a JSON string of class names, got {type(text).__name__}")
    try:
        names = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{source}: not a JSON list of class names ({e.msg})") from None
    return check_class_names(names, source)


def describe_difference(a: Sequence[str], b: Sequence[str]) -> str:
    """Where two different name lists first differ, e.g. ``class 3 is 'cat' vs 'dog'``."""
    if len(a) != len(b):
        return f"{len(a)} names vs {len(b)}"
    i = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    return f"class {i} is {_shown(a[i])} vs {_shown(b[i])}"
