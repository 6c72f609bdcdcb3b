"""Invariance examples (Tramer et al., ICML 2020): l_inf construction for MNIST, an on-disk cache of
generated sets, and the packaged human-labelled sets with their metrics (METHODS.md section 6)."""

from .cache import CacheKey, cache_path, load_or_generate, load_set, missing_indices, save_set
from .construct import InvarianceSet, generate_invariance_examples, least_ink_choice, project_linf
from .inputs import TARGETS
from .search import NeighbourSearch, nearest_neighbours
from .transforms import align_neighbours, rigid_transform, transform_copies, transform_grid
from .human_sets import (
    HumanLabelledSet,
    Rate,
    flip_share,
    human_agreement,
    list_human_sets,
    load_human_set,
    source_label_rate,
    target_label_rate,
)

__all__ = [
    "TARGETS", "InvarianceSet", "NeighbourSearch", "generate_invariance_examples",
    "nearest_neighbours", "transform_grid", "transform_copies", "rigid_transform",
    "align_neighbours", "project_linf", "least_ink_choice",
    "CacheKey", "cache_path", "load_or_generate", "load_set", "save_set", "missing_indices",
    "HumanLabelledSet", "Rate", "list_human_sets", "load_human_set", "human_agreement",
    "flip_share", "source_label_rate", "target_label_rate",
]
