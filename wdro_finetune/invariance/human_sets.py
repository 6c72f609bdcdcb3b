"""The human-labelled MNIST invariance sets of Tramer et al. (ICML 2020), packaged with wdro-finetune,
and the invariance metrics (METHODS.md section 6).

Each example was labelled by people: the human label is the class a person sees, which may differ
from the MNIST label of the source image. A model *agrees with humans* on an example when its
prediction equals the human label; that share is the definitive invariance metric. On generated
sets (no human labels) we report how often the prediction stays at the source label (Ovalle et
al.'s "invariance accuracy" is measured against the SOURCE label) or moves to the target label.

Sets (``x`` always (N, 1, 28, 28) float32 in [0, 1]):

=========================== ===== ============================================ ==================
name                        N     file (``assets/invariance/``)                human != source
=========================== ===== ============================================ ==================
``inv_human_linf03``        100   linf/automated_eps03 (float32 0..255)        21 %
``inv_human_linf04``        100   linf/automated_eps04 (uint8)                 37 %
``inv_human_linf04_manual`` 50    linf/manual_eps04 + manual_indexs (uint8)    88 %
``inv_human_l0``            100   l0/automated (uint8)                         55 %
=========================== ===== ============================================ ==================
"""

from __future__ import annotations

import dataclasses
import functools
from importlib import resources
from typing import NamedTuple

import numpy as np

from ..errors import UserError

_ASSETS = ("assets", "invariance")


@dataclasses.dataclass(frozen=True)
class _SetSpec:
    images: str  # path under assets/invariance, without .npy
    indices: str  # file of MNIST-test source indices
    threat: str  # "linf" or "l0"
    eps: float | None  # nominal l_inf radius in [0, 1] units


_SPECS: dict[str, _SetSpec] = {
    "inv_human_linf03": _SetSpec("linf/automated_eps03", "indexs", "linf", 0.3),
    "inv_human_linf04": _SetSpec("linf/automated_eps04", "indexs", "linf", 0.4),
    "inv_human_linf04_manual": _SetSpec("linf/manual_eps04", "linf/manual_indexs", "linf", 0.4),
    "inv_human_l0": _SetSpec("l0/automated", "indexs", "l0", None),
}


class Rate(NamedTuple):
    """A share in [0, 1] and the number of examples it was computed on."""

    share: float
    n: int


@dataclasses.dataclass(frozen=True)
class HumanLabelledSet:
    """One human-labelled invariance set.

    x: (N, 1, 28, 28) float32 in [0, 1]. human_label: (N,) int64 class a person sees.
    source_index: (N,) int64 index of the source image in the official MNIST test set.
    threat: ``"linf"`` or ``"l0"``; eps: nominal l_inf radius in [0, 1] units (None for l0).
    """

    name: str
    x: np.ndarray
    human_label: np.ndarray
    source_index: np.ndarray
    threat: str
    eps: float | None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def source_labels(self, mnist_test_labels: np.ndarray) -> np.ndarray:
        """(N,) int64 MNIST labels of the source images, given the (10000,) MNIST test labels."""
        labels = np.asarray(mnist_test_labels)
        if labels.shape != (10000,):
            raise ValueError(f"expected the 10000 MNIST test labels, got shape {labels.shape}")
        return labels[self.source_index].astype(np.int64)


def list_human_sets() -> tuple[str, ...]:
    """Names accepted by :func:`load_human_set`."""
    return tuple(_SPECS)


def load_human_set(name: str) -> HumanLabelledSet:
    """Load a packaged human-labelled set by name (see the module docstring); arrays are copies."""
    loaded = _load_cached(name)
    return dataclasses.replace(
        loaded, x=loaded.x.copy(), human_label=loaded.human_label.copy(),
        source_index=loaded.source_index.copy(),
    )


def human_agreement(predictions: np.ndarray, human_labels: np.ndarray) -> Rate:
    """Share of examples whose prediction equals the human label (higher is better)."""
    return _match_rate(predictions, human_labels)


def flip_share(human_labels: np.ndarray, source_labels: np.ndarray) -> Rate:
    """Share of examples whose human label differs from the source label (the true class changed)."""
    same = _match_rate(human_labels, source_labels)
    return Rate(1.0 - same.share, same.n)


def source_label_rate(predictions: np.ndarray, source_label: np.ndarray) -> Rate:
    """Generated sets: share of predictions equal to the SOURCE label (lower is better when the
    true class changed; Ovalle et al.'s "invariance accuracy")."""
    return _match_rate(predictions, source_label)


def target_label_rate(predictions: np.ndarray, target_label: np.ndarray) -> Rate:
    """Generated sets: share of predictions equal to the intended TARGET label."""
    return _match_rate(predictions, target_label)


def _match_rate(a: np.ndarray, b: np.ndarray) -> Rate:
    """Share of positions where two (N,) label vectors agree; predictions may be logits (N, C)."""
    a, b = _labels(a), _labels(b)
    if a.shape != b.shape:
        raise ValueError(f"label vectors differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("cannot compute a rate on zero examples")
    return Rate(float(np.mean(a == b)), int(a.size))


def _labels(values: np.ndarray) -> np.ndarray:
    """(N,) labels, or (N, C) scores turned into labels by argmax; torch tensors are accepted."""
    arr = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values)
    if arr.ndim == 2:
        arr = arr.argmax(axis=1)
    return arr.astype(np.int64).reshape(-1)


@functools.lru_cache(maxsize=None)
def _load_cached(name: str) -> HumanLabelledSet:
    spec = _SPECS.get(name)
    if spec is None:
        raise UserError(f"unknown human-labelled set {name!r}; choose one of {', '.join(_SPECS)}")
    raw = _read(spec.images)
    x = raw.astype(np.float32) / np.float32(255.0)  # float 0..255 and uint8 alike
    labels = _read(spec.images + "_labels").astype(np.int64)
    index = _read(spec.indices).astype(np.int64)
    if not (len(x) == len(labels) == len(index)):
        raise RuntimeError(f"packaged set {name} is inconsistent: {len(x)}, {len(labels)}, {len(index)}")
    return HumanLabelledSet(
        name=name, x=x[:, None], human_label=labels, source_index=index,
        threat=spec.threat, eps=spec.eps,
    )


def _read(stem: str) -> np.ndarray:
    """Read ``assets/invariance/<stem>.npy`` from the installed package."""
    path = resources.files("wdro_finetune").joinpath(*_ASSETS, *f"{stem}.npy".split("/"))
    with path.open("rb") as fh:
        return np.load(fh, allow_pickle=False)
