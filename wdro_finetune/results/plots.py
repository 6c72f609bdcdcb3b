"""Figures built from records: robustness curves (accuracy against the W_2 / W_inf budget), one small
panel per leaderboard row, the base model's pretrained row in grey in every panel for reference."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from ..attacks.knapsack import knapsack_accuracy
from ..errors import UserError
from ..utils.fileio import atomic_write_bytes
from .formatting import budget_value
from .records import load_per_example
from .rows import Row, build_rows

FINE_GRID = 241  # knapsack curve points between 0 and the largest budget


def robustness_curve(records_dir: str | Path, dataset: str, threat_model: str, out: str | Path) -> Path:
    """PNG of the robustness curves of one board (see :func:`curve_png`)."""
    rows = build_rows(records_dir).get((dataset, threat_model), [])
    png = curve_png(rows, records_dir, f"{dataset} ({threat_model} ground cost)", Path(out).suffix)
    if png is None:
        raise UserError(f"no wdro or distances results for {dataset} {threat_model} in {records_dir}")
    try:
        return atomic_write_bytes(out, png)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None


def curve_png(rows: list[Row], records_dir: str | Path, title: str, suffix: str = ".png") -> bytes | None:
    """Small multiples, one panel per row with a curve: W-PGD points (with 95% intervals) at the measured
    budgets, the knapsack attack's W_2 accuracy as a continuous line where the row has minimal distances,
    W_inf dashed; delta = 0 is the clean accuracy. None if no row has a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [(row, curve_data(row, records_dir)) for row in rows]
    curves = [(row, c) for row, c in curves if c["points"] or c["knapsack"] is not None]
    if not curves:
        return None
    ncols = 2 if len(curves) in (2, 4) else min(3, len(curves))
    nrows = math.ceil(len(curves) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.7 * nrows + 0.6), dpi=120, sharex=True,
                             sharey=True, squeeze=False)
    ticks = sorted({b for _, c in curves for b in c["labels"]}, key=budget_value)
    references = {row.fields["model"]: c for row, c in curves if row.fields["method"] == "pretrained"}
    for ax, (row, curve) in zip(axes.flat, curves):
        reference = references.get(row.fields["model"])
        _panel(ax, row, curve, None if reference is curve else reference, ticks)
    for k, ax in enumerate(axes.flat):
        if k >= len(curves):
            ax.set_visible(False)
        elif k + ncols >= len(curves):  # nothing drawn below: show its budget labels
            ax.xaxis.set_tick_params(labelbottom=True)
    handles, names = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            if name not in names:
                handles.append(handle)
                names.append(name)
    height = fig.get_figheight()
    fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), fontsize=7, frameon=False)
    fig.suptitle(f"Distributional robustness, {title}", fontsize=10)
    fig.supxlabel(r"budget $\delta$ (pixel units of [0, 1]; 0 = clean accuracy)", fontsize=8, y=0.3 / height)
    fig.supylabel("accuracy (%)", fontsize=8)
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1))
    return figure_bytes(fig, suffix)


def curve_data(row: Row, records_dir: str | Path) -> dict:
    """{'points': {family: [(delta, acc, lo, hi)]}, 'knapsack': (deltas, acc) | None, 'labels': [...]}."""
    points: dict[str, list[tuple[float, float, float, float]]] = {}
    labels = set()
    for name, val in row.metrics.items():
        family, _, budget = name.partition("_acc@")
        if family in ("w2", "winf") and budget:
            labels.add(budget)
            points.setdefault(family, []).append((budget_value(budget), val["value"], val.get("lo"), val.get("hi")))
    labels |= {n.partition("@")[2] for n in row.metrics if n.startswith("w2k_acc@")}
    clean = row.metrics.get("clean_acc")
    for family in points:
        if clean:
            points[family].append((0.0, clean["value"], clean.get("lo"), clean.get("hi")))
        points[family].sort()
    largest = max((budget_value(b) for b in labels), default=0.0)
    return {"points": points, "knapsack": _knapsack(row, records_dir, largest), "labels": sorted(labels),
            "clean": clean["value"] if clean else None}


def _knapsack(row: Row, records_dir: str | Path, largest: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The knapsack W_2 curve from the newest per-example ``dist`` of the row (same ground norm only)."""
    if row.labels.get("dist_norm", row.fields["threat_model"]) != row.fields["threat_model"]:
        return None
    for rec in reversed(row.records):
        dist = load_per_example(records_dir, rec["record_id"]).get("dist")
        if dist is not None:
            finite = dist[np.isfinite(dist)]
            top = largest or (float(np.quantile(finite, 0.5)) if finite.size else 0.0)
            deltas = np.linspace(0.0, top, FINE_GRID) if top > 0 else np.zeros(1)
            return deltas, knapsack_accuracy(dist, deltas, p=2.0).accuracy
    return None


def _panel(ax, row: Row, curve: dict, reference: dict | None, ticks: list[str]) -> None:
    if reference is not None:
        for family, pts in reference["points"].items():
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            ax.plot(xs, ys, "-" if family == "w2" else "--", color="0.7", lw=1, label="pretrained (reference)")
    if curve["knapsack"] is not None:
        ax.plot(*curve["knapsack"], "-", color="C3", lw=1.4, label=r"knapsack on minimal distances ($W_2$)")
    for family, pts in curve["points"].items():
        xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
        lo = np.array([p[2] if p[2] is not None else p[1] for p in pts])
        hi = np.array([p[3] if p[3] is not None else p[1] for p in pts])
        name = "W-PGD ($W_2$)" if family == "w2" else r"W-PGD ($W_\infty$)"
        ax.errorbar(xs, ys, yerr=[ys - lo, hi - ys], fmt="o" + ("-" if family == "w2" else "--"), ms=3, lw=1,
                    capsize=2, color="C0" if family == "w2" else "C2", label=name)
    if curve["clean"] is not None:
        ax.annotate(f"clean {curve['clean']:.1f}", (0.0, curve["clean"]), xytext=(4, 3),
                    textcoords="offset points", fontsize=7)
    rank = f"  (#{row.rank}, {row.protocol.aa_version} AA)" if row.rank else ""
    title = f"{row.fields['method']}{rank}"
    ax.set_title(f"{title}\n{row.fields['model']}", fontsize=8)
    ax.set_xticks([0.0] + [budget_value(b) for b in ticks], ["0"] + ticks, fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(alpha=0.3)


def figure_bytes(fig, suffix: str = ".png") -> bytes:
    """A matplotlib figure as file bytes (closed afterwards); UserError for an unknown file type."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format=suffix.lower().lstrip(".") or "png")
    except ValueError as exc:
        raise UserError(f"cannot write a .{suffix.lstrip('.')} figure: {str(exc).splitlines()[0]}") from None
    finally:
        plt.close(fig)
    return buffer.getvalue()


def save_figure(fig, out: str | Path) -> Path:
    """Write a matplotlib figure atomically (a reader never sees half a PNG) and close it."""
    data = figure_bytes(fig, Path(out).suffix)
    try:
        return atomic_write_bytes(out, data)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
