"""The trained two-stage detector as one object, saved as one file and loaded without running code from it.

A :class:`TrainedDetector` holds what detection needs and nothing of training: the networks (the MIL
base model, the T-RPN, the proposal classifier, and the Stage-3 student where the configuration enables
it), the configuration, the class names and the features
it expects (:class:`FeatureSpec`: width per modality, seconds per feature). :meth:`DetectorRunner.train
<wstal.pipeline.DetectorRunner.train>` returns one; :func:`wstal.inference.detect` applies it to any
videos; ``examples/thumos_two_stage.py`` saves it as ``OUT/detector.pt`` and ``examples/detect.py``
loads it.

The file is a plain dict of str, int, float, lists, dicts and tensors (the networks' state dicts), read
with ``torch.load(..., weights_only=True)``: unpickling can build nothing else, so a crafted file cannot
run code. The configuration is rebuilt from its dict (:func:`~wstal.config.from_dict`) and validated, the
networks from the configuration (:func:`~wstal.stages.build_network`) before their weights are loaded
strictly; a file of another format version or with a part missing is refused with a
:class:`DetectorFileError` that names what is wrong.

Axis legend: t snippets, c channels, k classes.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from .config import DetectorConfig, from_dict
from .data import WSTALDataset, snippet_clock
from .model import FusionStrategy
from .stages import NETWORKS, build_network

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "DetectorFileError",
    "FeatureSpec",
    "TrainedDetector",
    "base_strategy_for",
]

FORMAT = "dmf-fusion trained detector"
"""The ``format`` entry of a detector file."""

FORMAT_VERSION = 2
"""The version of the file layout this code writes and reads; any other is refused (version 2: the
configuration gained Stage 3, and the file its network where it is enabled)."""

PathLike = Union[str, "os.PathLike[str]"]


class DetectorFileError(ValueError):
    """A detector file that cannot be used: unreadable, of another format or version, or a part missing or
    malformed. The message names the file and what is wrong."""


def base_strategy_for(stage1: str, stage2: str) -> str:
    """The base model's fusion: the single modality when both stages use the same single modality
    (so a single-modality run never sees the other modality), ``concat`` otherwise (the conventional
    MIL baseline, shared by every fusion configuration so they differ only in their stages)."""
    s1, s2 = FusionStrategy.parse(stage1), FusionStrategy.parse(stage2)
    if s1.name == s2.name and s1.name in ("rgb", "flow"):
        return s1.name
    return "concat"


@dataclass(frozen=True)
class FeatureSpec:
    """What the detector's features look like: ``rgb_dim`` + ``flow_dim`` channels per feature (RGB first
    in a joint ``(t, rgb_dim + flow_dim)`` array), one feature every ``snippet_seconds``, feature 0's
    snippet starting at ``start_seconds`` (snippet position ``p`` is at ``start_seconds + p *
    snippet_seconds``, as :func:`~wstal.data.snippet_clock` says)."""

    rgb_dim: int
    flow_dim: int
    snippet_seconds: float
    start_seconds: float = 0.0

    def __post_init__(self) -> None:
        for name in ("rgb_dim", "flow_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"FeatureSpec.{name} must be an integer >= 1, got {value!r}")
        for name, low in (("snippet_seconds", 0.0), ("start_seconds", None)):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < float("inf")
            if not ok or (low is not None and not value > low):
                bound = "a number > 0" if low is not None else "a finite number"
                raise ValueError(f"FeatureSpec.{name} must be {bound}, got {value!r}")

    @property
    def width(self) -> int:
        """Channels of one joint feature row, ``rgb_dim + flow_dim``."""
        return self.rgb_dim + self.flow_dim

    @classmethod
    def of(cls, dataset: WSTALDataset) -> FeatureSpec:
        """The features of ``dataset``'s training videos: their widths and their clock (the most common one
        where the videos' clocks differ, e.g. per-video fps)."""
        clocks = Counter(snippet_clock(v, dataset.snippet_seconds) for v in dataset.train)
        seconds, start = clocks.most_common(1)[0][0] if clocks else (dataset.snippet_seconds, 0.0)
        return cls(dataset.rgb_dim, dataset.flow_dim, float(seconds), float(start))


@dataclass(frozen=True, eq=False)
class TrainedDetector:
    """The trained detector: its networks, the configuration they were trained under, the class names and
    the features they take.

    Attributes:
        config: the configuration; its ``stage1_fusion`` / ``stage2_fusion`` are the two stages' fusions, and its
            proposal and scoring settings are what :func:`~wstal.inference.detect` uses by default.
        classes: class names in class-index order.
        features: the features the networks take (:class:`FeatureSpec`).
        base_model: the snippet-level MIL base model (:class:`~wstal.model.MILBaseModel`).
        rpn: the Stage-1 T-RPN (:class:`~wstal.model.TemporalRPN`).
        classifier: the Stage-2 proposal classifier (:class:`~wstal.model.ProposalClassifier`).
        student: the Stage-3 student (:class:`~wstal.student.BoundaryStudent`), present exactly where
            ``config.student.enabled``.
    """

    config: DetectorConfig
    classes: tuple[str, ...]
    features: FeatureSpec
    base_model: nn.Module
    rpn: nn.Module
    classifier: nn.Module
    student: Optional[nn.Module] = None

    def __post_init__(self) -> None:
        if (self.student is not None) != self.config.student.enabled:
            state = "enabled" if self.config.student.enabled else "disabled"
            raise ValueError(
                f"student: the configuration has Stage 3 {state}, got "
                f"{'no student' if self.student is None else 'a student'}"
            )

    @property
    def stage1_fusion(self) -> str:
        """Stage 1's (T-RPN) fusion."""
        return self.config.stage1_fusion

    @property
    def stage2_fusion(self) -> str:
        """Stage 2's (proposal classifier) fusion."""
        return self.config.stage2_fusion

    @property
    def base_fusion(self) -> str:
        """The base model's fusion (:func:`base_strategy_for`)."""
        return base_strategy_for(self.stage1_fusion, self.stage2_fusion)

    @property
    def device(self) -> torch.device:
        """Where the networks are."""
        return next(self.classifier.parameters()).device

    def networks(self) -> dict[str, nn.Module]:
        """The networks by their name in :data:`~wstal.stages.NETWORKS` (``stage3`` where there is a
        student)."""
        found = {"base": self.base_model, "stage1": self.rpn, "stage2": self.classifier}
        if self.student is not None:
            found["stage3"] = self.student
        return found

    def state(self) -> dict[str, Any]:
        """The detector as plain data (what :meth:`save` writes): str, numbers, lists, dicts, CPU tensors."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "config": self.config.as_dict(),
            "classes": list(self.classes),
            "features": dataclasses.asdict(self.features),
            "networks": {
                name: {k: v.detach().cpu() for k, v in net.state_dict().items()}
                for name, net in self.networks().items()
            },
        }

    def save(self, path: PathLike) -> Path:
        """Write the detector to ``path`` as one file (written beside it and renamed, so a reader never sees
        half a file); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        torch.save(self.state(), partial)
        partial.replace(path)
        return path

    @classmethod
    def from_state(
        cls, state: Any, *, where: str = "detector", device: torch.device | str = "cpu"
    ) -> TrainedDetector:
        """Rebuild a detector from :meth:`state`'s plain form; ``where`` names the source in errors."""
        if not isinstance(state, dict):
            raise DetectorFileError(f"{where}: not a detector file (a {type(state).__name__}, not a dict)")
        if state.get("format") != FORMAT:
            raise DetectorFileError(
                f"{where}: not a detector file (format {state.get('format')!r}, expected {FORMAT!r})"
            )
        if state.get("version") != FORMAT_VERSION:
            raise DetectorFileError(
                f"{where}: format version {state.get('version')!r}; this code reads version {FORMAT_VERSION} "
                "(retrain, or load it with the dmf-fusion version that wrote it)"
            )
        missing = [k for k in ("config", "classes", "features", "networks") if k not in state]
        if missing:
            raise DetectorFileError(f"{where}: missing part(s) {', '.join(missing)}")
        try:
            config = from_dict(DetectorConfig, state["config"], "config")
            features = from_dict(FeatureSpec, state["features"], "features")
        except (TypeError, ValueError) as error:
            raise DetectorFileError(f"{where}: {error}") from None
        classes = state["classes"]
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
            raise DetectorFileError(
                f"{where}: classes must be a non-empty list of names, got {classes!r:.80}"
            )
        weights = state["networks"]
        if not isinstance(weights, dict):
            raise DetectorFileError(f"{where}: networks must be a dict of state dicts")
        names = NETWORKS if config.student.enabled else NETWORKS[:3]
        missing = [n for n in names if n not in weights]
        if missing:
            raise DetectorFileError(f"{where}: missing network(s) {', '.join(missing)}")
        unexpected = sorted(set(map(str, weights)) - set(names))
        if unexpected:
            raise DetectorFileError(
                f"{where}: network(s) {', '.join(unexpected)} its configuration has no use for"
            )
        fusions = {
            "base": base_strategy_for(config.stage1_fusion, config.stage2_fusion),
            "stage1": config.stage1_fusion,
            "stage2": config.stage2_fusion,
            "stage3": config.stage3_fusion,
        }
        networks = {}
        for name in names:
            net = build_network(
                name,
                fusions[name],
                config,
                rgb_dim=features.rgb_dim,
                flow_dim=features.flow_dim,
                num_classes=len(classes),
            )
            try:
                net.load_state_dict(weights[name], strict=True)
            except (RuntimeError, TypeError, AttributeError) as error:
                raise DetectorFileError(
                    f"{where}: network {name!r} does not fit its configuration: {error}"
                ) from None
            networks[name] = net.to(device).eval()
        return cls(
            config,
            tuple(classes),
            features,
            networks["base"],
            networks["stage1"],
            networks["stage2"],
            networks.get("stage3"),
        )

    @classmethod
    def load(cls, path: PathLike, *, device: torch.device | str = "cpu") -> TrainedDetector:
        """Read a detector :meth:`save` wrote, with ``torch.load(..., weights_only=True)``, onto ``device``.

        Raises:
            FileNotFoundError: no file at ``path``.
            DetectorFileError: the file is unreadable, of another format or version, or a part is missing or
                does not fit (the message names it).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no detector file")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many kinds on a corrupt or crafted file
            raise DetectorFileError(
                f"{path}: not a readable detector file ({type(error).__name__}: {error})"
            ) from None
        return cls.from_state(state, where=str(path), device=device)
