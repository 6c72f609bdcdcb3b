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
from typing import Any, Iterable, Mapping, Sequence

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
@dataclasses.dataclass(frozen=True)
class Bounds:
    """The allowed values of a number option (each item of a list option): ``> gt``, ``>= ge``, ``<= le``
    (None: no such bound)."""

    gt: float | None = None
    ge: float | None = None
    le: float | None = None

    def holds(self, value: float) -> bool:
        return ((self.gt is None or value > self.gt) and (self.ge is None or value >= self.ge)
                and (self.le is None or value <= self.le))

    def describe(self) -> str:
        """``be > 0``, ``be >= 0``, ``lie in [0, 1]``, ``lie in (0, 1]``, ``be <= 1``."""
        low = f"> {self.gt:g}" if self.gt is not None else f">= {self.ge:g}" if self.ge is not None else None
        if self.le is None:
            return f"be {low}"
        if low is None:
            return f"be <= {self.le:g}"
        return f"lie in {'(' if self.gt is not None else '['}{low.split()[1]}, {self.le:g}]"


def _bounds(gt: float | None, ge: float | None, le: float | None) -> Bounds | None:
    return Bounds(gt, ge, le) if (gt, ge, le) != (None, None, None) else None


def option(default: Any, help: str, *, flag: str | None = None, aliases: tuple[str, ...] = (),
           choices: tuple[str, ...] | None = None, choices_from: str | None = None, metavar: str | None = None,
           action: str | None = None, gt: float | None = None, ge: float | None = None,
           le: float | None = None) -> Any:
    """A config dataclass field that is also a command-line option: its default, help text, choices and bounds
    are written here once; :func:`add_options` turns the fields into flags (``--<field-name>`` unless ``flag``;
    ``aliases``: further flags of the same option, e.g. an old name). ``choices_from``: the key of a registry
    that the config floor cannot import (see :func:`field_choices`); ``gt`` / ``ge`` / ``le``: the value
    (each item of a list) must be >, >=, <= that (:func:`check_bounds`). ``default`` may be
    ``dataclasses.MISSING`` (a required field); ``action="store_true"``: a plain switch (no ``--no-x``), for a
    boolean that only the command line turns on."""
    return dataclasses.field(default=default, metadata={
        "help": help, "flag": flag, "aliases": aliases, "choices": choices, "choices_from": choices_from,
        "metavar": metavar, "action": action, "bounds": _bounds(gt, ge, le)})


def bounded(default: Any, *, gt: float | None = None, ge: float | None = None, le: float | None = None) -> Any:
    """A config dataclass field with bounds (as :func:`option`) that is no flag of its own (a config-file key, or
    a flag made elsewhere)."""
    return dataclasses.field(default=default, metadata={"bounds": _bounds(gt, ge, le)})


def option_flag(f: dataclasses.Field) -> str:
    """The flag that names field ``f`` in help and messages: its own ``flag``, else ``--<field-name>``."""
    return f.metadata.get("flag") or option_label(f.name)


def field_choices(f: dataclasses.Field, registries: Mapping[str, Sequence[str]] | None = None) -> tuple[str, ...]:
    """The names field ``f`` may take: its ``choices``, or those of its ``choices_from`` key in ``registries``
    (given by a floor that may import the registries; () when not given: unchecked here)."""
    key = f.metadata.get("choices_from")
    if key is not None:
        return tuple((registries or {}).get(key, ()))
    return tuple(f.metadata.get("choices") or ())


def canonical_keys(fields: Iterable[dataclasses.Field], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with a key spelled after a field's ``flag`` or ``aliases`` (``deltas`` for ``--deltas``)
    renamed to the field's name (``delta``), the one key that resolved options, records and sweep job ids use;
    both spellings set: UserError."""
    out = dict(options)
    for f in fields:
        for flag in (f.metadata.get("flag"), *f.metadata.get("aliases", ())):
            key = (flag or "").removeprefix("--").replace("-", "_")
            if not (flag or "").startswith("--") or key == f.name or key not in out:
                continue
            value = out.pop(key)
            if value is not None and out.get(f.name) is not None:
                raise UserError(f"{option_flag(f)} is given twice (as {key} and {f.name}); give it once")
            out[f.name] = value if value is not None else out.get(f.name)
    return out


def check_choices(fields: Iterable[dataclasses.Field], values: dict[str, Any],
                  registries: Mapping[str, Sequence[str]] | None = None) -> None:
    """One-line UserError for the first value in ``values`` that is not one of its field's choices."""
    for f in fields:
        choices, value = field_choices(f, registries), values.get(f.name)
        if choices and value is not None and value not in choices:
            raise UserError(f"{option_flag(f)} must be one of {', '.join(choices)}, got {value!r}")


def check_bounds(fields: Iterable[dataclasses.Field], values: dict[str, Any]) -> None:
    """One-line UserError for the first (converted) value in ``values`` outside its field's bounds; a tuple's
    items each."""
    for f in fields:
        bounds, value = f.metadata.get("bounds"), values.get(f.name)
        if bounds is None or value is None:
            continue
        many = isinstance(value, tuple)
        if not all(bounds.holds(v) for v in (value if many else (value,))):
            label = option_flag(f) + (" values" if many else "")
            raise UserError(f"{label} must {bounds.describe()}, got {list(value) if many else value}")


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


def add_options(parser, cls: type, skip: tuple[str, ...] = (),
                registries: Mapping[str, Sequence[str]] | None = None) -> None:
    """One flag per :func:`option` field of ``cls`` (argparse default None, so a ``--config`` file can set it;
    the help shows the field's real default; ``registries``: the names of the ``choices_from`` keys, see
    :func:`field_choices`). Booleans become ``--x / --no-x``; values are converted later by
    :func:`convert_fields`, the one strict rule, whatever their source."""
    import argparse

    for f in option_fields(cls):
        if f.name in skip:
            continue
        meta = f.metadata
        shown = f.default if f.default is not dataclasses.MISSING and not meta.get("action") else None
        text = meta["help"] + ("" if shown is None or "default" in meta["help"] else f" (default: {_shown(shown)})")
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": text}
        choices = field_choices(f, registries)
        if choices:
            kwargs["choices"] = choices
        if meta["metavar"]:
            kwargs["metavar"] = meta["metavar"]
        if meta.get("action"):
            kwargs["action"] = meta["action"]
        elif _field_kinds(cls).get(f.name) is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        parser.add_argument(option_flag(f), *meta.get("aliases", ()), **kwargs)


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return getattr(value, "value", value) if not isinstance(value, float) else f"{value:g}"
