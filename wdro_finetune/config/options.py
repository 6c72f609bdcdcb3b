"""The one strict conversion of option values, whatever they come from: command-line flags (strings),
``--config`` YAML / TOML files and sweep files (typed values).

Rules, the same everywhere (a value that breaks one is refused with one line naming the option):

- bool: only a real boolean: a flag on the command line, ``true`` / ``false`` unquoted in YAML / TOML. A string
  such as ``"true"`` or ``"no"`` is refused, never guessed.
- int: an integer, or a string of decimal digits with an optional sign; never a float (``3.0`` and ``3.5`` are
  refused) or a bool. Integers lie in [-(2**31 - 1), 2**31 - 1]; seeds in [0, 2**32 - 1].
- float: a number, or a string such as ``0.03`` or ``8/255``; finite; never a bool.
- str: a string; numbers or lists where a name or path is expected are refused.
- tuple of names: a comma-separated string or a list of strings.

:func:`convert_fields` applies them to every field of a config dataclass by its type annotation, so a field
added later is converted strictly without further code.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from functools import lru_cache
from typing import Any

from . import parse_number
from ..errors import UserError

INT_LIMIT = 2**31 - 1
SEED_LIMIT = 2**32 - 1
_INT_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*")


def option_label(key: str) -> str:
    """``n_examples`` -> ``--n-examples`` (how messages name an option from any source)."""
    return "--" + key.replace("_", "-")


def to_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    raise UserError(f"{name} must be true or false (a flag, or an unquoted YAML / TOML boolean), got {value!r}")


def to_int(value: Any, name: str, lo: int = -INT_LIMIT, hi: int = INT_LIMIT) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        out = value
    elif isinstance(value, str) and _INT_TEXT.fullmatch(value) and len(value.strip()) <= 40:
        out = int(value)
    else:
        raise UserError(f"{name} must be an integer, got {value!r}")
    if not lo <= out <= hi:
        raise UserError(f"{name} must lie in [{lo}, {hi}], got {_short(out)}")
    return out


def to_str(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    raise UserError(f"{name} must be a string, got {_short(value)}")


def to_names(value: Any, name: str) -> tuple[str, ...]:
    """``"a,b"`` or ``["a", "b"]`` -> ``("a", "b")`` (blank items dropped)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        raise UserError(f"{name} must be a comma-separated string or a list of names, got {_short(value)}")
    return tuple(v.strip() for v in items if v.strip())


def convert_fields(cls: type, values: dict[str, Any], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """``values`` with every non-None field of dataclass ``cls`` converted by its annotation (rules above);
    other keys and fields of other types (enums, mappings) are passed through unchanged."""
    kinds = _field_kinds(cls)
    out = dict(values)
    for key, value in values.items():
        kind = kinds.get(key)
        if value is None or kind is None or key in skip:
            continue
        name = option_label(key)
        if kind is bool:
            out[key] = to_bool(value, name)
        elif kind is int:
            out[key] = to_int(value, name, *((0, SEED_LIMIT) if key == "seed" else ()))
        elif kind is float:
            if isinstance(value, bool):
                raise UserError(f"{name} must be a number, got {value!r}")
            out[key] = parse_number(value, name)
        elif kind is str:
            out[key] = to_str(value, name)
        elif kind is tuple:
            out[key] = to_names(value, name)
    return out


@lru_cache(maxsize=None)
def _field_kinds(cls: type) -> dict[str, type]:
    """{field: bool | int | float | str | tuple} for the fields with one of those types (``X | None`` too); the
    fields of a field that is itself a dataclass (an option group) are listed by their own names."""
    hints = typing.get_type_hints(cls)
    kinds = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            kinds.update(_field_kinds(hint))
            continue
        args = [hint] if typing.get_origin(hint) is tuple else \
            [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        base = typing.get_origin(args[0]) or args[0]
        if len(args) == 1 and base in (bool, int, float, str, tuple):
            kinds[f.name] = base
    return kinds


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------- options declared once, on dataclass fields
def option(default: Any, help: str, *, flag: str | None = None, choices: tuple[str, ...] | None = None,
           metavar: str | None = None, action: str | None = None) -> Any:
    """A config dataclass field that is also a command-line option: its default, help text and choices are
    written here once; :func:`add_options` turns the fields into flags (``--<field-name>`` unless ``flag``).
    ``default`` may be ``dataclasses.MISSING`` (a required field); ``action="store_true"``: a plain switch (no
    ``--no-x``), for a boolean that only the command line turns on."""
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, "choices": choices,
                                                        "metavar": metavar, "action": action})


def flat_fields(cls: type) -> dict[str, dataclasses.Field]:
    """{name: field} of dataclass ``cls``, the fields of an option-group field (a dataclass) in its place."""
    hints = typing.get_type_hints(cls)
    out: dict[str, dataclasses.Field] = {}
    for f in dataclasses.fields(cls):
        out.update(flat_fields(hints[f.name]) if dataclasses.is_dataclass(hints[f.name]) else {f.name: f})
    return out


def option_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of dataclass ``cls`` declared with :func:`option`, in declaration order."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def add_options(parser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One flag per :func:`option` field of ``cls`` (argparse default None, so a ``--config`` file can set it;
    the help shows the field's real default). Booleans become ``--x / --no-x``; values are converted later by
    :func:`convert_fields`, the one strict rule, whatever their source."""
    import argparse

    for f in option_fields(cls):
        if f.name in skip:
            continue
        meta = f.metadata
        flag = meta["flag"] or option_label(f.name)
        shown = f.default if f.default is not dataclasses.MISSING and not meta.get("action") else None
        text = meta["help"] + ("" if shown is None or "default" in meta["help"] else f" (default: {_shown(shown)})")
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": text}
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
        if meta["metavar"]:
            kwargs["metavar"] = meta["metavar"]
        if meta.get("action"):
            kwargs["action"] = meta["action"]
        elif _field_kinds(cls).get(f.name) is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        parser.add_argument(flag, **kwargs)


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return getattr(value, "value", value) if not isinstance(value, float) else f"{value:g}"
