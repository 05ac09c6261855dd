"""Typed dataclasses from YAML files and ``key=value`` overrides: the reading rules every config follows.

Split from :mod:`semrec.config` so that modules which build their own typed configs (the models) do not
import the command configs (which look up the models' parameter types): no import circle.

Every command resolves its config the same way: dataclass defaults, then a YAML file (optional),
then CLI overrides; the resolved config is saved next to what the command writes.

Values given as text (a ``--set key=value``, a plain YAML scalar) are converted by the type of the field they
set, never by YAML's guess: a ``str`` field keeps the text as written (``name=0123`` is ``"0123"``, not the
octal 83; ``out=out #1`` keeps the ``#1``; ``name=yes`` is ``"yes"``), an ``int`` field reads it in decimal
(``"0123"`` -> 123), a ``bool`` field takes true/false/yes/no/on/off/1/0, a list field a comma-separated list
or a YAML flow list. The free-form mappings ``model_params`` and ``params`` are converted by the types of the
model's config class or the tokenizer's constructor, and get YAML's reading only where those are unknown.
``null``, ``~`` or an empty value set an optional field to none. Typed values (the CLI's own options) are taken
as they are.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path, PurePath
from typing import Any, TypeVar

import yaml

from semrec.errors import SemrecError
from semrec.io import atomic_path
from semrec.text.decode import TextDecodeError, decode_bytes

T = TypeVar("T")
_NO_VALUE = object()


class Text(str):
    """A value given as text: the text as written, plus what YAML would read it as (``yaml_value``).

    ``_coerce`` picks one by the field's type: the text for ``str`` fields, ``yaml_value`` only for free-form
    ones. A ``str`` subclass, so it compares and hashes as its text."""

    yaml_value: Any

    def __new__(cls, text: str, yaml_value: Any = _NO_VALUE) -> Text:
        obj = super().__new__(cls, text)
        if yaml_value is _NO_VALUE:
            try:
                yaml_value = yaml.load(text, Loader=_TextLoader) if text.strip() else None
            except yaml.YAMLError:
                yaml_value = str(text)
            if not isinstance(yaml_value, (list, dict)):  # a flow list/mapping keeps its elements' text
                yaml_value = _plain(yaml_value)
        obj.yaml_value = yaml_value
        return obj


class _TextLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that keeps the text of plain scalars YAML would turn into a bool, number or date
    (as :class:`Text`); quoted scalars, strings and null are as ``safe_load`` reads them."""


def _keep_text(construct: Any) -> Any:
    def constructor(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
        value = construct(loader, node)
        return Text(node.value, _plain(value)) if node.style is None else value
    return constructor


for _tag, _construct in (("bool", yaml.SafeLoader.construct_yaml_bool),
                         ("int", yaml.SafeLoader.construct_yaml_int),
                         ("float", yaml.SafeLoader.construct_yaml_float),
                         ("timestamp", yaml.SafeLoader.construct_yaml_timestamp)):
    _TextLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _keep_text(_construct))


def _plain(value: Any) -> Any:
    """YAML's reading of a value (free-form fields): every :class:`Text` inside replaced by its ``yaml_value``."""
    if isinstance(value, Text):
        return _plain(value.yaml_value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _split_list(value: Text | str) -> list[Any]:
    if isinstance(value, Text) and isinstance(value.yaml_value, list):
        return value.yaml_value
    return [v.strip() for v in value.split(",") if v.strip()]


def shown_text(value: Any) -> Any:
    """A value as error messages quote it: the text as given for text, else the value."""
    return str(value) if isinstance(value, Text) else value


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return _plain(value)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, Text) and value.yaml_value is None)):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except SemrecError as exc:
                errors.append(str(exc))
        expected = [m.group(1) for m in (re.fullmatch(rf"config '{re.escape(key)}': expected (.+), got .+", e)
                                         for e in errors) if m]
        if len(errors) > 1 and len(expected) == len(errors):  # bool | Literal["auto"]: "expected true/false or 'auto'"
            raise SemrecError(errors[0].replace(f"expected {expected[0]},", f"expected {' or '.join(expected)},", 1))
        raise SemrecError(errors[0] if errors else f"config '{key}': bad value {value!r}")
    if origin is typing.Literal:
        text = str(value).strip() if isinstance(value, (str, Text)) else value
        for choice in args:
            if text == choice:
                return choice
        raise SemrecError(f"config '{key}': expected {' or '.join(repr(a) for a in args)}, got {shown_text(value)!r}")
    shown = shown_text(value)  # error messages quote the text as given
    if isinstance(value, Text) and isinstance(value.yaml_value, dict) and (
            dataclasses.is_dataclass(tp) or origin is dict or tp is dict):
        value = value.yaml_value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SemrecError(f"config '{key}': expected a mapping, got {shown!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = _split_list(value)
        if not isinstance(value, (list, tuple)):
            raise SemrecError(f"config '{key}': expected a list, got {shown!r}")
        inner = args[0] if args else Any
        return [_coerce(inner, v, key) for v in value]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise SemrecError(f"config '{key}': expected a mapping, got {shown!r}")
        return _plain(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in BOOL_WORDS:
            return BOOL_WORDS[value.strip().lower()]
        raise SemrecError(f"config '{key}': expected true/false, got {shown!r}")
    if tp is int:
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
            return int(value)  # decimal, as written ("0123" is 123, not YAML's octal 83)
        if isinstance(value, Text):
            value = value.yaml_value  # e.g. 0x10 or 1_000 in a YAML file
        if isinstance(value, bool) or not isinstance(value, int):
            raise SemrecError(f"config '{key}': expected an integer, got {shown!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise SemrecError(f"config '{key}': expected a number, got {shown!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            if isinstance(value, Text) and isinstance(value.yaml_value, (int, float)) and not isinstance(
                    value.yaml_value, bool):
                number = float(value.yaml_value)
            else:
                raise SemrecError(f"config '{key}': expected a number, got {shown!r}") from None
        if not math.isfinite(number):
            raise SemrecError(f"config '{key}': expected a finite number, got {shown!r}")
        return number
    if tp is str:
        if isinstance(value, (dict, list)):
            raise SemrecError(f"config '{key}': expected a string, got {value!r}")
        return str(value)  # a Text is its text as written
    return _plain(value)


BOOL_WORDS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False, "1": True,
              "0": False}


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, checking names and types; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise SemrecError(f"unknown config key(s) {', '.join(prefix + u for u in unknown)} "
                          f"(known: {', '.join(sorted(prefix + n for n in names))})")
    values = {k: _coerce(hints[k], v, prefix + k) for k, v in data.items()}
    config = cls(**values)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if "param_types" in f.metadata and isinstance(values.get(f.name), dict):
            # free-form parameters: typed by their consumer (model config, tokenizer) when it is known
            raw = data[f.name].yaml_value if isinstance(data[f.name], Text) else data[f.name]
            types_of = f.metadata["param_types"](config)
            setattr(config, f.name, {_plain(k): _coerce(types_of.get(_plain(k), Any), v, f"{prefix}{f.name}.{k}")
                                     for k, v in raw.items()})
    return config


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


Override = str | tuple[str, Any]


def apply_overrides(data: dict[str, Any], overrides: list[Override]) -> dict[str, Any]:
    """Apply overrides to a nested mapping (dotted keys for nesting): ``"a.b=value"`` strings (``--set``; the
    value is text, converted by the field's type when the config is built, see the module docstring) or
    ``(key, value)`` pairs of typed values (CLI options), taken as they are (a ``Path`` becomes its string)."""
    data = dict(data)
    for item in overrides:
        if isinstance(item, tuple):
            key, value = item
            value = str(value) if isinstance(value, PurePath) else value
        else:
            if "=" not in item:
                raise SemrecError(f"override {item!r} is not of the form key=value")
            key, raw = item.split("=", 1)
            if not key.strip():
                raise SemrecError(f"override {item!r} has no key (key=value)")
            value = Text(raw.strip())
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[parts[-1]] = value
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[Override] | None = None,
                base: dict[str, Any] | None = None) -> T:
    """Defaults <- ``base`` <- YAML file ``path`` <- ``overrides`` (see :func:`apply_overrides`). Values of the
    YAML file are converted by the field's type as ``--set`` values are (a ``name: 0123`` stays ``"0123"``)."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SemrecError(f"{path}: config file not found")
        try:
            loaded = yaml.load(decode_bytes(path.read_bytes())[0], Loader=_TextLoader) or {}
        except TextDecodeError as exc:
            raise SemrecError(f"{path}: not a UTF-8 or latin-1 text file ({exc})") from None
        except yaml.YAMLError as exc:
            raise SemrecError(f"{path}: invalid YAML ({exc})") from None
        if not isinstance(loaded, dict):
            raise SemrecError(f"{path}: expected a mapping at the top level")
        data.update(loaded)
    data = apply_overrides(data, overrides or [])
    return from_dict(cls, data)


def save_config(config: Any, path: str | Path) -> None:
    """Write a config as YAML, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")


