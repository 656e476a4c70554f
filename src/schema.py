"""General YAML-configuration machinery: a declarative table of keys, strict validation, dotted overrides.

A :class:`Schema` is a dict ``section -> key -> Key`` (a :class:`Key` directly under it is a top-level
key) plus cross checks that relate several keys. :meth:`Schema.load` reads one YAML file and
``section.key=value`` overrides and returns a plain nested dict with every default filled in, or raises
:class:`ConfigError`: one line naming the file or override, the key, what was expected and what was got.
The project's own table is ``src.config.SCHEMA``.

A file may start from another: a top-level ``base: other.yaml`` (a path relative to the file) takes every
value of that file (and of its own base, and so on) that it does not set itself. So a file holds only what
differs from the schema's defaults and from its base (:meth:`Schema.restated_keys` finds the rest).

YAML is read with PyYAML's safe loader plus two fixes: exponent floats without a dot or an exponent sign
(``7e-5``, ``1e9``, ``1.0e9``) are floats, not strings as in YAML 1.1, and a key repeated in one mapping is
an error instead of silently keeping the last value. Override values are parsed with the same loader.
"""
import copy
import difflib
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from .io.fileio import PathLike

__all__ = ["ConfigError", "KeyProblem", "Check", "Key", "REQUIRED", "BASE", "Schema", "an_int", "a_float",
           "a_bool", "a_str", "int_or_int_list", "ascending_int_list", "float_list", "show", "hint"]

CrossCheck = Callable[[dict[str, Any]], None]


class ConfigError(ValueError):
    """An invalid configuration; the message is one line: ``<file or override>: <key>: <what is wrong>``."""


class _Invalid(Exception):
    """Raised by a :class:`Check` function; the check's ``text`` says what was expected."""


class KeyProblem(Exception):
    """Raised by a cross check: ``key`` is the dotted key to blame, ``message`` what is wrong with it."""

    def __init__(self, key: str, message: str):
        super().__init__(key, message)
        self.key, self.message = key, message


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()  # default of a key the YAML must set
BASE = "base"  # top-level key of a file naming the file it starts from (not a schema key)


@dataclass(frozen=True)
class Check:
    """A value check: ``text`` says what is expected ("an int >= 1"), ``fn`` returns the normalised value
    (e.g. an int given for a float becomes a float) or raises ``_Invalid``."""
    text: str
    fn: Callable[[Any], Any]


@dataclass(frozen=True)
class Key:
    """One schema row. ``required_if`` names a bool key of the same section: when that key is false the
    value may be missing or null (it is then null in the result); otherwise the key is required."""
    check: Check
    default: Any
    doc: str
    required_if: str | None = None


# ----------------------------------------------------------------------------------------------- checks

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # YAML true/false must not pass as 1/0


def _range_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi}"
    return ""


def _within(v: float, lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> bool:
    if lo is not None and (v <= lo if lo_open else v < lo):
        return False
    return hi is None or (v < hi if hi_open else v <= hi)


def _as_float(v: Any, lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> float:
    if not (_is_int(v) or isinstance(v, float)) or not math.isfinite(v) or not _within(v, lo, hi, lo_open,
                                                                                       hi_open):
        raise _Invalid
    return float(v)


def an_int(lo: int | None = None, hi: int | None = None, nullable: bool = False) -> Check:
    """An int (not a bool) in ``[lo, hi]``; ``nullable`` also accepts null."""
    def fn(v: Any) -> int | None:
        if v is None and nullable:
            return None
        if not _is_int(v) or not _within(v, lo, hi, False, False):
            raise _Invalid
        return v
    return Check("an int" + _range_text(lo, hi, False, False) + (" or null" if nullable else ""), fn)


def a_float(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
            hi_open: bool = False, nullable: bool = False) -> Check:
    """A finite float (an int is accepted and converted) in the given range; ``nullable`` also accepts null."""
    def fn(v: Any) -> float | None:
        if v is None and nullable:
            return None
        return _as_float(v, lo, hi, lo_open, hi_open)
    return Check("a float" + _range_text(lo, hi, lo_open, hi_open) + (" or null" if nullable else ""), fn)


def a_bool() -> Check:
    """true or false (not 0/1)."""
    def fn(v: Any) -> bool:
        if not isinstance(v, bool):
            raise _Invalid
        return v
    return Check("true or false", fn)


def a_str(choices: Sequence[str] | None = None, nullable: bool = False) -> Check:
    """A non-empty string, or one of ``choices``; ``nullable`` also accepts null."""
    def fn(v: Any) -> str | None:
        if v is None and nullable:
            return None
        if not isinstance(v, str) or not v.strip() or (choices is not None and v not in choices):
            raise _Invalid
        return v
    text = "one of " + ", ".join(f"'{c}'" for c in choices) if choices else "a non-empty string"
    return Check(text + (" or null" if nullable else ""), fn)


def int_or_int_list(lo: int = 0) -> Check:
    """An int >= lo, or a list of them."""
    def fn(v: Any) -> int | list[int]:
        if _is_int(v) and v >= lo:
            return v
        if isinstance(v, list) and all(_is_int(x) and x >= lo for x in v):
            return list(v)
        raise _Invalid
    return Check(f"an int >= {lo} or a list of them", fn)


def ascending_int_list(lo: int = 0) -> Check:
    """A list of distinct ints >= lo in ascending order (so list-valued companions pair up unambiguously)."""
    def fn(v: Any) -> list[int]:
        if not isinstance(v, list) or not all(_is_int(x) and x >= lo for x in v) or \
                any(a >= b for a, b in zip(v, v[1:])):
            raise _Invalid
        return list(v)
    return Check(f"a list of distinct ints >= {lo} in ascending order", fn)


def float_list(n: int, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
               hi_open: bool = False) -> Check:
    """A list of exactly ``n`` finite floats in the given range."""
    def fn(v: Any) -> list[float]:
        if not isinstance(v, list) or len(v) != n:
            raise _Invalid
        return [_as_float(x, lo, hi, lo_open, hi_open) for x in v]
    return Check(f"a list of {n} floats" + _range_text(lo, hi, lo_open, hi_open), fn)



# ------------------------------------------------------------------------------------------------- YAML

class _Loader(yaml.SafeLoader):
    """Safe loader with YAML 1.2 exponent floats and duplicate-key errors (see the module docstring)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if (key_node.tag, key_node.value) in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key_node.value}'",
                                                            key_node.start_mark)
                seen.add((key_node.tag, key_node.value))
        return super().construct_mapping(node, deep)


_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+.0123456789"))


def _parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def _yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"invalid YAML{where}: {problem}".split())  # one line


def show(v: Any) -> str:
    """A value as the user wrote it in YAML (true, null, "text", [1, 2])."""
    return json.dumps(v, default=str)


def hint(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _base_path(path: str, value: Any) -> str:
    """The file a ``base:`` value of ``path`` names (relative to ``path``'s folder), which must exist."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: {BASE}: expected the name of a YAML file relative to this one, got {show(value)}")
    base = os.path.join(os.path.dirname(path), value)
    if not os.path.isfile(base):
        raise ConfigError(f"{path}: {BASE}: expected an existing YAML file, got {show(value)} ({base} not found)")
    return base


class Schema(dict):
    """``section -> key -> Key`` (or ``name -> Key`` for a top-level key), and the cross checks run in order
    after every key passed its own check; each takes the filled-in config and raises
    ``KeyProblem(dotted key to blame, message)``."""

    def __init__(self, table: Mapping[str, Key | Mapping[str, Key]], cross_checks: Sequence[CrossCheck] = ()):
        super().__init__(table)
        self.cross_checks = list(cross_checks)

    def rows(self) -> list[tuple[str, Key]]:
        """Every schema key as (dotted name, Key), in schema order."""
        rows = []
        for name, entry in self.items():
            if isinstance(entry, Key):
                rows.append((name, entry))
            else:
                rows.extend((f"{name}.{key}", row) for key, row in entry.items())
        return rows


    def _unknown(self, name: str, section: str | None) -> str:
        if section is None:
            known = list(self)
            return f"unknown section or key{hint(name, known)}; known: {', '.join(known)}"
        known = list(self[section])
        return f"unknown key{hint(name, known)}; known {section} keys: {', '.join(known)}"


    def _read_file(self, path: str) -> tuple[dict[str, Any], str | None]:
        """The raw values of the file by dotted key (structure checked, values not yet), and its base file."""
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
        try:
            doc = _parse_yaml(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: {_yaml_error(exc)}") from None
        if not isinstance(doc, dict):
            got = "an empty document" if doc is None else show(doc)
            raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {got}")
        raw, base = {}, None
        for name, value in doc.items():
            name = str(name)
            if name == BASE:
                base = _base_path(path, value)
                continue
            entry = self.get(name)
            if entry is None:
                raise ConfigError(f"{path}: {name}: {self._unknown(name, None)}")
            if isinstance(entry, Key):
                raw[name] = value
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {name}: expected a mapping of {name} keys, got {show(value)}")
            for key, v in value.items():
                key = str(key)
                if key not in entry:
                    raise ConfigError(f"{path}: {name}.{key}: {self._unknown(key, name)}")
                raw[f"{name}.{key}"] = v
        return raw, base

    def _read_chain(self, path: str) -> tuple[dict[str, Any], dict[str, str]]:
        """The raw values of ``path`` over those of its bases, and the file that gave each value."""
        raw: dict[str, Any] = {}
        origin: dict[str, str] = {}
        chain: list[str] = []
        next_path: str | None = path
        while next_path is not None:
            chain.append(next_path)
            values, next_path = self._read_file(chain[-1])
            for dotted, value in values.items():
                if dotted not in raw:
                    raw[dotted], origin[dotted] = value, chain[-1]
            if next_path is not None and os.path.realpath(next_path) in map(os.path.realpath, chain):
                raise ConfigError(f"{chain[-1]}: {BASE}: expected a file that does not lead back to itself, got "
                                  f"the cycle {' -> '.join(chain + [next_path])}")
        return raw, origin

    def restated_keys(self, path: PathLike) -> list[str]:
        """The dotted keys ``path`` sets to the value they would have without it: its base's, else the default."""
        path = os.fspath(path)
        values, base = self._read_file(path)
        inherited = self._read_chain(base)[0] if base is not None else {}
        restated = []
        for dotted, key in self.rows():
            if dotted not in values:
                continue
            try:
                value, without = key.check.fn(values[dotted]), key.check.fn(inherited.get(dotted, key.default))
            except _Invalid:
                continue  # an invalid value restates nothing (loading the file says what is wrong with it)
            if value == without:
                restated.append(dotted)
        return restated


    def _parse_override(self, text: str) -> tuple[str, Any]:
        """``"section.key=value"`` -> (dotted key, YAML-parsed value)."""
        where = f"override '{text}'"
        dotted, sep, value = text.partition("=")
        dotted = dotted.strip()
        if not sep or not dotted:
            raise ConfigError(f"{where}: expected 'section.key=value', e.g. 'ppt.r=[30,60,90]'")
        parts = dotted.split(".")
        entry = self.get(parts[0])
        if entry is None:
            raise ConfigError(f"{where}: {parts[0]}: {self._unknown(parts[0], None)}")
        if isinstance(entry, Key) and len(parts) > 1:
            raise ConfigError(f"{where}: {parts[0]} is a top-level key, not a section; write '{parts[0]}=value'")
        if isinstance(entry, dict):
            if len(parts) != 2:
                raise ConfigError(f"{where}: expected exactly one key under '{parts[0]}', e.g. "
                                  f"'{parts[0]}.{next(iter(entry))}=value'")
            if parts[1] not in entry:
                raise ConfigError(f"{where}: {dotted}: {self._unknown(parts[1], parts[0])}")
        try:
            return dotted, _parse_yaml(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: {dotted}: value is {_yaml_error(exc)}") from None


    def load(self, path: PathLike, overrides: Sequence[str] | None = None) -> dict[str, Any]:
        """Read, override, validate and complete a YAML config.

        Args:
            path: the YAML file; a ``base:`` in it starts from another file (see the module docstring).
            overrides: ``"section.key=value"`` strings (``"seed=3"`` for a top-level key), applied in order
                after the file; the value is YAML (``ppt.r=[30,60,90]``, ``ppt.enabled=false``).

        Returns:
            A plain nested dict (``{"seed": ..., "model": {...}, "ppt": {...}, "data": {...}}``) holding every
            schema key, defaults filled in, ints given for floats converted to floats.

        Raises:
            ConfigError: one line naming the file or override, the key, what was expected and what was got.
        """
        path = os.fspath(path)
        raw, origin = self._read_chain(path)
        for text in overrides or ():
            dotted, value = self._parse_override(text)
            raw[dotted], origin[dotted] = value, f"override '{text}'"

        flat = {}
        for dotted, key in self.rows():
            section = dotted.rpartition(".")[0]
            if key.required_if is not None:
                switch = f"{section}.{key.required_if}"
                optional = flat[switch] is False  # the switch key comes earlier in its section
            else:
                optional = False
            if dotted not in raw:
                if key.default is REQUIRED and not optional:
                    condition = f" (as {switch} is true)" if key.required_if else ""
                    raise ConfigError(f"{path}: {dotted}: missing required key{condition}; expected {key.check.text}")
                # a copy, so a caller editing its config never edits the schema's list defaults
                flat[dotted] = None if key.default is REQUIRED else copy.deepcopy(key.default)
                continue
            if raw[dotted] is None and optional:
                flat[dotted] = None
                continue
            try:
                flat[dotted] = key.check.fn(raw[dotted])
            except _Invalid:
                raise ConfigError(f"{origin[dotted]}: {dotted}: expected {key.check.text}, "
                                  f"got {show(raw[dotted])}") from None

        cfg: dict[str, Any] = {}
        for dotted, value in flat.items():
            section, _, key = dotted.rpartition(".")
            if section:
                cfg.setdefault(section, {})[key] = value
            else:
                cfg[key] = value
        for check in self.cross_checks:
            try:
                check(cfg)
            except KeyProblem as exc:
                raise ConfigError(f"{origin.get(exc.key, path)}: {exc.key}: {exc.message}") from None
        return cfg



    def markdown(self) -> str:
        """The schema as a Markdown table ."""
        lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for dotted, key in self.rows():
            if key.default is REQUIRED:
                default = f"required if {dotted.rpartition('.')[0]}.{key.required_if}" if key.required_if \
                    else "required"
            else:
                default = f"`{show(key.default)}`"
            lines.append(f"| `{dotted}` | {key.check.text} | {default} | {key.doc} |")
        return "\n".join(lines) + "\n"


