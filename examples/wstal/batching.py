"""Padded batches of variable-length videos: what every network of the detector takes, in training and
in inference.

Axis legend: b batch, t time (snippets), c channels, k classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from .distributed import DistributedContext, shard_positions

__all__ = ["Batch", "collate", "pad_sequences"]


@dataclass
class Batch:
    """Padded videos and whatever a stage needs per video.

    Attributes:
        names: video names.
        rgb, flow: features, zero-padded.
        mask: True = valid snippet.
        labels: multi-hot video labels.
        targets: stage-specific padded tensors, e.g. ``objectness`` (b, t).
        per_video: stage-specific lists with one tensor per video, e.g. ``proposals``.
        ghost: a stand-in share of a distributed batch, trained with weight zero (see :func:`collate`).

    Shape:
        rgb: (b, t, c_rgb); flow: (b, t, c_flow); mask: (b, t); labels: (b, k).
    """

    names: list[str]
    rgb: Tensor
    flow: Tensor
    mask: Tensor
    labels: Tensor
    targets: dict[str, Tensor] = field(default_factory=dict)
    per_video: dict[str, list[Tensor]] = field(default_factory=dict)
    ghost: bool = False

    def to(self, device: torch.device | str) -> Batch:
        """The batch on ``device``."""
        return Batch(
            self.names,
            self.rgb.to(device),
            self.flow.to(device),
            self.mask.to(device),
            self.labels.to(device),
            {k: v.to(device) for k, v in self.targets.items()},
            {k: [x.to(device) for x in v] for k, v in self.per_video.items()},
            self.ghost,
        )


def pad_sequences(arrays: Sequence[np.ndarray | Tensor]) -> Tensor:
    """Stack sequences of different lengths along a new batch axis, zero-padded at the end of time.

    Shape:
        arrays: b arrays (t_i, ...). Returns (b, max t_i, ...).
    """
    tensors = [torch.as_tensor(a) for a in arrays]
    out = tensors[0].new_zeros((len(tensors), max(x.shape[0] for x in tensors), *tensors[0].shape[1:]))
    for i, x in enumerate(tensors):
        out[i, : x.shape[0]] = x
    return out


def collate(
    names: Sequence[str],
    rgb: Sequence[np.ndarray | Tensor],
    flow: Sequence[np.ndarray | Tensor],
    labels: Sequence[np.ndarray | Tensor],
    *,
    targets: Optional[dict[str, Sequence[np.ndarray | Tensor]]] = None,
    per_video: Optional[dict[str, list[Tensor]]] = None,
    shard: Optional[DistributedContext] = None,
) -> Batch:
    """Pad variable-length videos into a :class:`Batch` with a validity mask.

    With a distributed ``shard``, the arguments are the *global* batch and only this rank's share is
    collated (videos ``rank, rank + world_size, ...``); a rank without a video of its own gets the first
    one as a ghost (``Batch.ghost``, trained with weight zero). See :mod:`wstal.distributed`.
    """
    ghost = False
    if shard is not None and shard.enabled:
        keep, ghost = shard_positions(len(names), shard.rank, shard.world_size)

        def pick(seq: Sequence[Any]) -> list[Any]:
            return [seq[i] for i in keep]

        names, rgb, flow, labels = pick(names), pick(rgb), pick(flow), pick(labels)
        targets = {k: pick(v) for k, v in (targets or {}).items()}
        per_video = {k: pick(v) for k, v in (per_video or {}).items()}
    lengths = torch.tensor([len(x) for x in rgb])
    mask = torch.arange(int(lengths.max())) < lengths.unsqueeze(1)
    return Batch(
        list(names),
        pad_sequences(rgb).float(),
        pad_sequences(flow).float(),
        mask,
        torch.stack([torch.as_tensor(y) for y in labels]).float(),
        {k: pad_sequences(v) for k, v in (targets or {}).items()},
        dict(per_video or {}),
        ghost,
    )
