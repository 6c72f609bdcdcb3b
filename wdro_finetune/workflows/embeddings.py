"""Embedding plot: 2-D PCA of penultimate features of clean, sensitivity-perturbed (FGSM) and
invariance-perturbed images, one panel per model, coloured by class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..attacks.pointwise import FGSM
from ..models.features import FeatureHook
from ..results.plots import save_figure


@dataclass(frozen=True)
class EmbeddingPanel:
    """One model's points: ``coords`` (3N, 2) PCA coordinates of [clean; FGSM; invariance] features,
    ``colour_labels`` (3N,) class used for colour (true class for clean and FGSM, the target, i.e. new
    true class, for invariance examples), ``kind`` (3N,) 0 clean, 1 FGSM, 2 invariance."""

    title: str
    coords: np.ndarray
    colour_labels: np.ndarray
    kind: np.ndarray
    explained: tuple[float, float]  # share of the clean features' variance on each axis


@torch.no_grad()
def penultimate(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """h(x): the input of the last nn.Linear, (N, D), for x (N, C, H, W) in [0, 1], model in eval mode."""
    feats = []
    with FeatureHook(model) as hook:
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size])
            feats.append(hook.pop()[0].flatten(1))
    return torch.cat(feats)


def pca_2d(fit: torch.Tensor, *others: torch.Tensor) -> tuple[list[np.ndarray], tuple[float, float]]:
    """Project ``fit`` and ``others`` (each (N_i, D)) on the top two principal axes of ``fit``."""
    mean = fit.mean(0, keepdim=True)
    centred = (fit - mean).double()
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    axes = vh[:2].T
    share = (s.square() / s.square().sum().clamp_min(1e-30))[:2].tolist()
    share += [0.0] * (2 - len(share))
    return [((t - mean).double() @ axes).numpy() for t in (fit, *others)], (share[0], share[1])


def embedding_panel(title: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_inv: torch.Tensor,
                    y_inv_target: torch.Tensor, eps: float) -> EmbeddingPanel:
    """x, x_inv: (N, C, H, W) clean test images and their invariance examples; y, y_inv_target: (N,)."""
    model.eval()
    x_sens = FGSM(eps=eps)(model, x, y)
    (clean, sens, inv), explained = pca_2d(penultimate(model, x), penultimate(model, x_sens),
                                           penultimate(model, x_inv))
    n = len(x)
    return EmbeddingPanel(title, np.concatenate([clean, sens, inv]),
                          np.concatenate([y.numpy(), y.numpy(), y_inv_target.numpy()]),
                          np.repeat([0, 1, 2], n), explained)


def embedding_plot(panels: list[EmbeddingPanel], out: str | Path, eps: float) -> Path:
    """PNG with one scatter panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    cols = len(panels)
    fig, axes = plt.subplots(1, cols, figsize=(max(4.6 * cols, 7.0), 5.3), dpi=150, squeeze=False)
    cmap = plt.get_cmap("tab10")
    markers = {0: ("o", "clean"), 1: ("x", f"FGSM eps={eps:g}"), 2: ("^", "invariance (target colour)")}
    for ax, panel in zip(axes[0], panels):
        for kind, (marker, _) in markers.items():
            rows = panel.kind == kind
            ax.scatter(panel.coords[rows, 0], panel.coords[rows, 1], c=cmap(panel.colour_labels[rows] % 10),
                       marker=marker, s=9 if kind else 7, linewidths=0.6, alpha=0.8 if kind else 0.5)
        ax.set_title(panel.title, fontsize=9)
        ax.set_xlabel(f"PC1 ({100 * panel.explained[0]:.0f}% of clean variance)", fontsize=8)
        ax.set_ylabel(f"PC2 ({100 * panel.explained[1]:.0f}%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.2)
    handles = [Line2D([], [], linestyle="", marker=m, color="0.3", label=label) for m, label in markers.values()]
    handles += [Line2D([], [], linestyle="", marker="s", color=cmap(k), label=str(k)) for k in range(10)]
    fig.legend(handles=handles, loc="lower center", ncol=7, fontsize=7, frameon=False)
    fig.suptitle("Penultimate features (PCA fitted on the clean images of each model)", fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return save_figure(fig, out)
