"""Typed run configurations: datasets, threat models, defaults, and config files (YAML / TOML).

Configs are frozen dataclasses. A config file sets any field by its name (dashes or underscores);
command-line flags override the file; the resolved config is saved with every run.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import tomllib
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import UserError


class Dataset(str, enum.Enum):
    """Image classification data sets (RobustBench naming where it has one)."""

    MNIST = "mnist"
    CIFAR10 = "cifar10"
    CIFAR100 = "cifar100"
    IMAGENET = "imagenet"


class ThreatModel(str, enum.Enum):
    """Pointwise threat models; ``corruptions`` exists only for RobustBench model names."""

    LINF = "Linf"
    L2 = "L2"
    CORRUPTIONS = "corruptions"


NUM_CLASSES = {Dataset.MNIST: 10, Dataset.CIFAR10: 10, Dataset.CIFAR100: 100, Dataset.IMAGENET: 1000}

_DEFAULT_EPS = {
    (Dataset.MNIST, ThreatModel.LINF): 0.3,
    (Dataset.MNIST, ThreatModel.L2): 2.0,
    (Dataset.CIFAR10, ThreatModel.LINF): 8 / 255,
    (Dataset.CIFAR100, ThreatModel.LINF): 8 / 255,
    (Dataset.IMAGENET, ThreatModel.LINF): 4 / 255,
    (Dataset.CIFAR10, ThreatModel.L2): 0.5,
    (Dataset.CIFAR100, ThreatModel.L2): 0.5,
    (Dataset.IMAGENET, ThreatModel.L2): 3.0,
}

# An eps above this (in [0,1] pixel units) is certainly a mistake (e.g. 8 instead of 8/255).
_MAX_EPS = {ThreatModel.LINF: 1.0, ThreatModel.L2: 100.0}


def parse_dataset(value: str | Dataset) -> Dataset:
    """Dataset from a string such as ``cifar10``; UserError listing the choices otherwise."""
    try:
        return Dataset(str(value.value if isinstance(value, Dataset) else value).lower())
    except ValueError:
        raise UserError(f"unknown dataset {value!r}; choose one of {', '.join(d.value for d in Dataset)}") from None


def parse_threat_model(value: str | ThreatModel) -> ThreatModel:
    """Threat model from ``Linf`` / ``L2`` / ``corruptions`` (case-insensitive)."""
    text = str(value.value if isinstance(value, ThreatModel) else value)
    for tm in ThreatModel:
        if tm.value.lower() == text.lower():
            return tm
    raise UserError(f"unknown threat model {value!r}; choose one of {', '.join(t.value for t in ThreatModel)}")


def parse_number(value: Any, name: str) -> float:
    """A float from ``0.03``, ``8/255`` or a number; UserError naming the option otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        out = float(value)
    else:
        text = str(value).strip()
        try:
            out = float(Fraction(text)) if re.fullmatch(r"[0-9.eE+-]+/[0-9.eE+-]+", text) else float(text)
        except (ValueError, ZeroDivisionError):
            raise UserError(f"{name} must be a number such as 0.03 or 8/255, got {value!r}") from None
    if not math.isfinite(out):
        raise UserError(f"{name} must be finite, got {value!r}")
    return out


def parse_number_list(value: Any, name: str) -> tuple[float, ...]:
    """A tuple of floats from ``1/510,2/510`` or a list."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    out = tuple(parse_number(v, name) for v in items if str(v).strip())
    if not out:
        raise UserError(f"{name} needs at least one value")
    return out


def default_eps(dataset: Dataset, threat_model: ThreatModel) -> float:
    """The standard pointwise budget for a dataset and threat model (pixel units of [0,1])."""
    try:
        return _DEFAULT_EPS[(dataset, threat_model)]
    except KeyError:
        raise UserError(f"no default eps for {dataset.value} {threat_model.value}; pass --eps") from None


def check_eps(eps: float, threat_model: ThreatModel, name: str = "eps") -> float:
    """Reject eps <= 0 or absurdly large values for the threat model."""
    if eps <= 0:
        raise UserError(f"{name} must be > 0, got {eps}")
    limit = _MAX_EPS.get(threat_model)
    if limit is not None and eps > limit:
        raise UserError(f"{name}={eps} is absurd for {threat_model.value} on [0,1] images (did you mean {eps}/255?)")
    return eps


def check_device(device: str) -> str:
    """``cpu`` or ``cuda[:i]`` with an existing GPU i; UserError otherwise (``mps`` is not supported: the
    attacks and the training were never checked on it)."""
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:[0-9]{1,3})?", device):
        raise UserError(f"unsupported device {device!r}; use cpu or cuda[:i]")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"device {device} requested but CUDA is not available; use --device cpu")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"device {device} requested but only {torch.cuda.device_count()} GPU(s) exist")
    return device


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) mapping; keys use underscores."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise UserError(f"config file {path} must end in .yaml, .yml or .toml")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"config file {path} is malformed: {first}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def check_known_keys(values: Mapping[str, Any], allowed: set[str], source: str) -> None:
    """UserError for keys that are not options of the command (typos in config files)."""
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise UserError(f"{source}: unknown option(s) {', '.join(unknown)}")


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, enums, paths and tuples to plain JSON values (stable, for hashing and saving)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    return obj
