"""``wdro-finetune invariance generate``: make (or find in the cache) the l_inf invariance examples of the first
``n`` images of an MNIST split, with a progress bar."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import parse_dataset, parse_number
from ..config.options import to_int
from ..errors import UserError
from ..invariance.cache import CacheKey, cache_path
from ..invariance.construct import InvarianceSet
from ..invariance.generated import generated_set
from ..utils.fileio import check_output_paths
from ..utils.progress import progress_bar
from .options import InvarianceOptions


@dataclass(frozen=True)
class GeneratedInvariance:
    """The examples (``examples.x``: (N, 28, 28) in [0, 1]) and the cache file that holds them."""

    examples: InvarianceSet
    path: Path
    eps: float  # l_inf radius, [0, 1] pixel units
    split: str
    grid: str

    def summary(self) -> str:
        return (f"{len(self.examples.source_index)} invariance examples (eps {self.eps:g}, {self.split}, "
                f"grid {self.grid}) in {self.path}")


def generate(options: InvarianceOptions, progress: bool = False) -> GeneratedInvariance:
    """Invariance examples of the first ``n`` images of ``split`` at radius ``eps``, cached under ``out``."""
    if parse_dataset(options.dataset).value != "mnist":
        raise UserError("invariance examples exist for MNIST only")
    n = to_int(options.n, "--n")
    if n < 1:
        raise UserError(f"--n must be >= 1, got {n}")
    eps = parse_number(options.eps, "--eps")
    split, grid, out = options.split, options.grid, options.out
    check_output_paths(folders=[out])
    with progress_bar(n, "invariance", progress, unit="img") as bar:
        inv = generated_set(split, n, eps, grid, out, options.data_dir,
                            progress=lambda done, total: bar.update(done - bar.n))
    return GeneratedInvariance(inv, cache_path(out, CacheKey("mnist", float(eps), split, n, grid)), eps, split, grid)


ACTIONS = {"generate": generate}  # ``wdro-finetune invariance ACTION``
