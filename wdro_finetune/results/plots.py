"""Figures built from records: robustness curves (accuracy against the W_2 / W_inf budget)."""

from __future__ import annotations

import io
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

from ..errors import UserError
from ..utils.fileio import atomic_write_bytes
from .records import check_record, latest_by_id, read_records


def robustness_curve(records_dir: str | Path, dataset: str, threat_model: str, out: str | Path) -> Path:
    """PNG: accuracy (%) against delta, one colour per (model, method); W_2 solid, W_inf dashed,
    delta = 0 is the clean accuracy; shaded bands are the 95% Wilson intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = collect_curves(records_dir, dataset, threat_model)
    if not curves:
        raise UserError(f"no wdro results for {dataset} {threat_model} in {records_dir}")
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=150)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, ((model, method), families) in enumerate(sorted(curves.items())):
        colour = colours[i % len(colours)]
        for family, style in (("w2", "-"), ("winf", "--")):
            points = families.get(family)
            if not points:
                continue
            xs, ys, lo, hi = zip(*sorted(points))
            name = "$W_2$" if family == "w2" else r"$W_\infty$"
            ax.plot(xs, ys, style, marker="o", ms=3, color=colour, label=f"{model} / {method} ({name})")
            ax.fill_between(xs, lo, hi, color=colour, alpha=0.12, linewidth=0)
    ax.set_xlabel(r"budget $\delta$ (pixel units of [0, 1])")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Distributional robustness, {dataset} ({threat_model} ground cost)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return save_figure(fig, out)


def save_figure(fig, out: str | Path) -> Path:
    """Write a matplotlib figure atomically (a reader never sees half a PNG) and close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format=Path(out).suffix.lower().lstrip(".") or "png")
    except ValueError as exc:  # e.g. an unknown file type
        raise UserError(f"cannot write {out}: {str(exc).splitlines()[0]}") from None
    finally:
        plt.close(fig)
    try:
        return atomic_write_bytes(out, buffer.getvalue())
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None


def collect_curves(records_dir: str | Path, dataset: str, threat_model: str
                   ) -> dict[tuple[str, str], dict[str, list[tuple[float, float, float, float]]]]:
    """{(model, method): {'w2'|'winf': [(delta, acc, lo, hi), ...]}} with (0, clean) as the first point."""
    curves: dict = defaultdict(lambda: defaultdict(dict))
    for rec in latest_by_id(read_records(records_dir)):
        if check_record(rec, records_dir)["dataset"] != dataset or rec["threat_model"] != threat_model:
            continue
        metrics = rec.get("metrics", {})
        key = (rec["model"], rec["method"])
        for name, val in metrics.items():
            family, _, budget = name.partition("_acc@")
            if family in ("w2", "winf") and budget:
                curves[key][family][float(Fraction(budget))] = (val["value"], val.get("lo"), val.get("hi"))
        clean = metrics.get("clean_acc")
        if clean:
            for family in ("w2", "winf"):
                if curves[key].get(family):
                    curves[key][family][0.0] = (clean["value"], clean.get("lo"), clean.get("hi"))
    return {k: {f: [(d, *v) for d, v in pts.items()] for f, pts in fam.items() if pts}
            for k, fam in curves.items() if any(fam.values())}
