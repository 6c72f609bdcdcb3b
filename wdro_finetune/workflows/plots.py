"""``wdro-finetune plot``: the robustness-curve figure (from records) and the embeddings figure (from models:
2-D PCA of penultimate features of clean, FGSM and invariance examples, MNIST), one PNG each."""

from __future__ import annotations

from pathlib import Path

from ..config import Dataset, ThreatModel, parse_dataset, parse_number, parse_threat_model
from ..config.options import to_int
from ..errors import UserError
from .options import PlotOptions


def plot(options: PlotOptions) -> Path:
    """Write the ``options.kind`` figure of ``options.dataset`` to ``options.out`` (PNG); returns its path.
    robustness-curve reads ``records`` (the boards of ``threat_model``); embeddings loads ``model`` (see
    :func:`plot_embeddings`)."""
    dataset = parse_dataset(options.dataset)
    if options.kind == "embeddings":
        return plot_embeddings(dataset, options)
    from ..results.plots import robustness_curve

    return robustness_curve(options.records, dataset.value, parse_threat_model(options.threat_model).value,
                            options.out)


def plot_embeddings(dataset: Dataset, options: PlotOptions) -> Path:
    """One panel per checkpoint (``"none"``: the model's own weights) of the first ``n`` MNIST test images,
    their FGSM examples and their invariance examples at l_inf radius ``eps`` (generated with ``inv_grid``
    and cached in ``inv_cache``)."""
    import torch

    from ..data.datasets import load_split
    from ..invariance.generated import generated_set
    from ..models import load_model
    from .embeddings import embedding_panel, embedding_plot

    if dataset is not Dataset.MNIST:
        raise UserError("plot embeddings needs --dataset mnist (invariance examples exist for MNIST only)")
    if not options.model:
        raise UserError("plot embeddings needs --model")
    n = to_int(options.n, "--n")
    if n < 1:
        raise UserError(f"--n must be >= 1, got {n}")
    eps = parse_number(options.eps, "--eps")
    checkpoints, titles = _panels(options)
    data = load_split(dataset, "test", n, data_dir=options.data_dir)
    inv = generated_set("test", n, eps, options.inv_grid, options.inv_cache, options.data_dir)
    x_inv, target = torch.from_numpy(inv.x).unsqueeze(1), torch.from_numpy(inv.target_label)
    panels = []
    for title, checkpoint in zip(titles, checkpoints):
        loaded = load_model(options.model, dataset, ThreatModel.LINF, source=options.source,
                            checkpoint=None if checkpoint == "none" else checkpoint, model_dir=options.model_dir,
                            trust_checkpoint=options.trust_checkpoint)
        panels.append(embedding_panel(title, loaded.module, data.x, data.y, x_inv, target, eps))
    return embedding_plot(panels, options.out, eps)


def _panels(options: PlotOptions) -> tuple[list[str], list[str]]:
    """(checkpoints, titles), one per panel; a title defaults to the checkpoint's folder name."""
    def as_list(value: str | list[str] | None) -> list[str] | None:
        return [value] if isinstance(value, str) else value

    checkpoints = as_list(options.checkpoint) or ["none"]
    titles = as_list(options.title) or [Path(c).parent.name if c != "none" else f"{options.model} (pretrained)"
                                        for c in checkpoints]
    if len(titles) != len(checkpoints):
        raise UserError(f"give one --title per --checkpoint ({len(checkpoints)}), got {len(titles)}")
    return checkpoints, titles
