"""What a trained Stage-1 network's fusion does on some videos: the DMF attentions it learned and the
mutual loss it ends at (issue: the library's headline block must earn its place).

:func:`fusion_statistics` reads the T-RPN of a :class:`~wstal.trained.TrainedDetector` and returns, over
the videos' valid snippets, numbers that say whether DMF's gates carry information and how much they
change the features the mutual fusion sees:

* ``temporal gate``: the mean of ``a_t``, the Flow-made gate that scales each RGB snippet by
  ``1 + alpha a_t``;
* ``temporal spread``: the standard deviation of ``a_t`` within a video (mean over the videos): near 0,
  every snippet is scaled alike and the gate only rescales the whole video;
* ``temporal fg - bg``: the mean ``a_t`` of the ground truth's foreground snippets less that of the
  background ones (over the videos that have both);
* ``temporal AUC``: how well ``a_t`` alone tells foreground from background snippets (0.5: not at all;
  :func:`rank_auc`);
* ``RGB modulation``: the relative spread of the scale ``1 + alpha a_t`` within a video, i.e. how far DMF
  changes one RGB snippet's magnitude against another's (in percent);
* ``channel gate``, ``channel spread``: the mean of ``a_c`` and its spread over the Flow channels;
* ``channel across videos``: the spread of each channel's gate over the videos (mean over channels):
  near 0, ``a_c`` is one fixed channel scaling, whatever the video shows;
* ``Flow modulation``: the relative spread of ``1 + alpha a_c`` over the channels (in percent);
* ``gate entropy``: the mean binary entropy of the temporal gates in bits (1: every gate at 0.5);
* ``mutual loss``: the mutual loss of the fusion on these videos (mutual strategies only).

The dot form's maps are ``(t, s)`` and ``(c, c)``; for it the temporal numbers read the attention each
snippet receives (the column mean of ``A_t`` times ``t``: 1 for an even spread) as its gate, and the
channel numbers the diagonal of ``A_c`` times ``c``. Its enhancement mixes snippets and channels rather
than scaling them, so its two modulation numbers do not measure it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch

from wstal.data import Video, snippet_clock
from wstal.trained import TrainedDetector

__all__ = ["STATISTICS", "foreground_snippets", "fusion_statistics", "rank_auc"]

STATISTICS = (
    "temporal gate",
    "temporal spread",
    "temporal fg - bg",
    "temporal AUC",
    "RGB modulation (%)",
    "channel gate",
    "channel spread",
    "channel across videos",
    "Flow modulation (%)",
    "gate entropy (bits)",
    "mutual loss",
)
"""The numbers :func:`fusion_statistics` returns, in the order the docs' table prints them."""


def foreground_snippets(video: Video, snippet_seconds: float) -> np.ndarray:
    """Which snippets of ``video`` have their centre inside a ground-truth segment, ``(t,)`` bool.

    Example:
        >>> v = Video("v", np.zeros((4, 2)), np.zeros((4, 2)), np.ones(1), [[0.7, 1.6]], [0], duration=2.56)
        >>> foreground_snippets(v, 0.64).tolist()   # centres at 0.32, 0.96, 1.6, 2.24 s
        [False, True, True, False]
    """
    step, start = snippet_clock(video, snippet_seconds)
    centres = start + (np.arange(video.num_snippets) + 0.5) * step
    inside = (centres[:, None] >= video.segments[:, 0]) & (centres[:, None] <= video.segments[:, 1])
    return inside.any(axis=1)


def rank_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """The area under the ROC curve of ``scores`` for the ``positive`` items: the chance that a random
    positive scores above a random negative, ties counting a half (Mann-Whitney). NaN without both kinds.

    Example:
        >>> rank_auc(np.array([0.9, 0.2, 0.5, 0.5]), np.array([True, False, True, False]))
        0.875
    """
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties (1-based)
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for start, count in zip(first, counts):
        ranks[order[start : start + count]] = start + (count + 1) / 2
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


@torch.no_grad()
def fusion_statistics(
    trained: TrainedDetector, videos: Sequence[Video], snippet_seconds: float, *, device: str = "cpu"
) -> dict[str, Optional[float]]:
    """The numbers of :data:`STATISTICS` for the Stage-1 fusion of ``trained`` on ``videos`` (None where
    the fusion has no such part: the DMF numbers without DMF, the mutual loss without mutual fusion)."""
    fusion = trained.rpn.fusion
    was_training = fusion.training
    fusion.eval()
    dmf = fusion.dmf
    temporal, channels, fg_minus_bg, rgb_mod, flow_mod, entropy, losses = [], [], [], [], [], [], []
    labels = []
    for video in videos:
        rgb = torch.from_numpy(video.rgb)[None].to(device)
        flow = torch.from_numpy(video.flow)[None].to(device)
        losses.append(float(fusion(rgb, flow).aux_loss))
        if dmf is None:
            continue
        out = dmf(rgb, flow, return_attention=True)
        a_t = out.temporal_attention[0].double().cpu().numpy()
        a_c = out.channel_attention[0].double().cpu().numpy()
        if a_t.ndim == 2:  # dot form: the attention each snippet receives, and each channel's own weight
            a_t, a_c = a_t.mean(axis=0) * a_t.shape[0], np.diagonal(a_c) * a_c.shape[0]
        fg = foreground_snippets(video, snippet_seconds)
        temporal.append(a_t)
        channels.append(a_c)
        labels.append(fg)
        if fg.any() and not fg.all():
            fg_minus_bg.append(a_t[fg].mean() - a_t[~fg].mean())
        scale_t, scale_c = 1 + dmf.alpha * a_t, 1 + dmf.alpha * a_c
        rgb_mod.append(100 * scale_t.std() / scale_t.mean())
        flow_mod.append(100 * scale_c.std() / scale_c.mean())
        entropy.append(_binary_entropy(np.clip(a_t, 0, 1)).mean())
    fusion.train(was_training)
    mutual = float(np.mean(losses)) if fusion.mutual_loss is not None else None
    if dmf is None:
        return {**dict.fromkeys(STATISTICS), "mutual loss": mutual}
    channel_matrix = np.stack(channels)
    return {
        "temporal gate": float(np.mean(np.concatenate(temporal))),
        "temporal spread": float(np.mean([t.std() for t in temporal])),
        "temporal fg - bg": float(np.mean(fg_minus_bg)) if fg_minus_bg else float("nan"),
        "temporal AUC": rank_auc(np.concatenate(temporal), np.concatenate(labels)),
        "RGB modulation (%)": float(np.mean(rgb_mod)),
        "channel gate": float(channel_matrix.mean()),
        "channel spread": float(channel_matrix.std(axis=1).mean()),
        "channel across videos": float(channel_matrix.std(axis=0).mean()),
        "Flow modulation (%)": float(np.mean(flow_mod)),
        "gate entropy (bits)": float(np.mean(entropy)),
        "mutual loss": mutual,
    }
