"""RobustBench model zoo: names, and loading through ``robustbench.utils.load_model``.

A checkpoint already at ``<model_dir>/<dataset>/<threat_model>/<Name>.pt`` is used as is (no
download). Without it robustbench downloads from Google Drive; when that fails (offline), a
one-line UserError says exactly where to put the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from ..compat import import_robustbench
from ..config import Dataset, ThreatModel
from ..errors import UserError
from ..registry import unknown_name_message
from ..utils.fileio import sha256_file
from .checkpoint import load_weights_into
from .source import MODEL_SOURCES, RANDOM_INIT, LoadedModel, LoadRequest, ModelEntry, ModelSource, checkpoint_path

log = logging.getLogger(__name__)

ZOO_DATASETS = (Dataset.CIFAR10, Dataset.CIFAR100, Dataset.IMAGENET)
ZOO_THREATS = (ThreatModel.LINF, ThreatModel.L2, ThreatModel.CORRUPTIONS)


def zoo_names(dataset: Dataset, threat_model: ThreatModel) -> list[str]:
    """Every RobustBench model name for a dataset and threat model ([] if the pair has none)."""
    if dataset not in ZOO_DATASETS or threat_model not in ZOO_THREATS:
        return []
    import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel as RBThreat

    by_threat = model_dicts.get(BenchmarkDataset(dataset.value), {})
    return sorted(by_threat.get(RBThreat(threat_model.value), {}))


def check_zoo_name(name: str, dataset: Dataset, threat_model: ThreatModel, others: tuple[str, ...] = ()) -> None:
    """UserError unless ``name`` is in the zoo for this dataset and threat model; suggests close names
    among the zoo and ``others`` (e.g. builtin names)."""
    names = zoo_names(dataset, threat_model)
    if name in names:
        return
    from .builtin import BUILTIN_MODELS

    candidates = names + list(BUILTIN_MODELS) + list(others)
    kind = "model" if names else f"model ({dataset.value} {threat_model.value} has no RobustBench models)"
    raise UserError(unknown_name_message(kind, name, candidates))


def load_zoo_model(name: str, dataset: Dataset, threat_model: ThreatModel, model_dir: str | Path) -> nn.Module:
    """Build a RobustBench model with its weights (downloading only if the file is absent)."""
    check_zoo_name(name, dataset, threat_model)
    rb = import_robustbench()
    path = checkpoint_path(model_dir, dataset, threat_model, name)
    if not path.is_file():
        log.info("downloading %s into %s", name, path)
    try:
        model = rb.utils.load_model(name, model_dir=str(model_dir), dataset=dataset.value,
                                    threat_model=threat_model.value)
    except UserError:
        raise
    except Exception as exc:  # network and format errors from gdown / requests / torch.load
        if path.is_file():
            raise UserError(f"RobustBench could not load {path}: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
        raise UserError(f"cannot download {name} ({type(exc).__name__}); offline, put its checkpoint at {path}") from None
    return model.eval()


class RobustBenchSource(ModelSource):
    """The RobustBench zoo: every name no other source claims. Weights from ``checkpoint`` (into the zoo
    architecture) or robustbench's own loader (the layout file in ``model_dir``, downloaded when absent)."""

    name = "robustbench"
    claim_order = 9
    downloads_into_model_dir = True

    def claims(self, model_name: str) -> bool:
        return True

    def names(self, dataset: Dataset | None, threat_model: ThreatModel | None, pattern: str) -> list[ModelEntry]:
        return [ModelEntry(self.name, n, ds.value, tm.value)
                for ds in ([dataset] if dataset else ZOO_DATASETS)
                for tm in ([threat_model] if threat_model else ZOO_THREATS) for n in zoo_names(ds, tm)]

    def build(self, request: LoadRequest, num_classes: int, pretrained: bool) -> nn.Module:
        check_zoo_name(request.name, request.dataset, request.threat_model)
        from robustbench.model_zoo import model_dicts
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel as RBThreat

        by_threat = model_dicts[BenchmarkDataset(request.dataset.value)][RBThreat(request.threat_model.value)]
        return by_threat[request.name]["model"]()

    def load(self, request: LoadRequest) -> LoadedModel:
        if request.checkpoint is None and not request.pretrained:
            return LoadedModel(self.build(request, 0, False).eval(), request.name, self.name, None, None, RANDOM_INIT)
        if request.checkpoint is None:
            module = load_zoo_model(request.name, request.dataset, request.threat_model, request.model_dir)
            weights = request.layout_file
        else:
            module, weights = self.build(request, 0, False), request.checkpoint
            load_weights_into(module, weights, trust=request.trust_checkpoint)
        sha = sha256_file(weights) if weights.is_file() else None
        return LoadedModel(module.eval(), request.name, self.name, str(weights) if sha else None, sha,
                           "checkpoint" if request.checkpoint else "robustbench")


MODEL_SOURCES.add(RobustBenchSource.name, RobustBenchSource())
