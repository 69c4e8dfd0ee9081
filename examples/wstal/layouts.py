"""Which THUMOS14 folder layout a ``--data-dir`` holds, and loading it: the one entry point for real data.

Three layouts are recognised from the folder's content:

- ``thumos14reduced``: W-TALC / CO2-Net / P-MIL's ``Thumos14reduced-I3D-JOINTFeatures.npy`` plus
  ``Thumos14reduced-Annotations/`` (:mod:`.thumos`), 16-frame snippets at 25 fps;
- ``actionformer``: ``annotations/thumos14.json`` plus ``i3d_features/<video>.npy`` (:mod:`.per_video`);
- ``opentad``: ``annotations/thumos_14_anno.json`` (+ ``category_idx.txt``) plus a feature folder.

A folder with no per-video annotation file is read as ``thumos14reduced`` (the layout's own messages say
what is missing); a folder holding both kinds is refused.

Axis legend: none (no tensors here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from .data import WSTALDataset
from .per_video import ACTIONFORMER_JSON, OPENTAD_JSON, find_variant, load_per_video
from .thumos import ANNOTATIONS_DIR, FEATURES_FILE, THUMOS14_REDUCED_TIMING, load_thumos14

__all__ = ["LAYOUTS", "detect_layout", "load_data_dir"]

PathLike = Union[str, Path]

LAYOUTS = ("thumos14reduced", "actionformer", "opentad")


def detect_layout(data_dir: PathLike) -> str:
    """The layout of ``data_dir``, one of :data:`LAYOUTS`, from the files it holds.

    Raises:
        ValueError: the folder holds files of both the Thumos14reduced and a per-video layout, or both
            per-video annotation files.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     detect_layout(tmp)
        'thumos14reduced'
    """
    data_dir = Path(data_dir)
    variant = find_variant(data_dir)
    reduced = (data_dir / FEATURES_FILE).exists() or (data_dir / ANNOTATIONS_DIR).exists()
    if variant is not None and reduced:
        raise ValueError(
            f"{data_dir}: holds both the Thumos14reduced layout ({FEATURES_FILE}, {ANNOTATIONS_DIR}/) and the "
            f"per-video layout ({variant.annotation_file}); point --data-dir at a folder with one"
        )
    return "thumos14reduced" if variant is None else variant.name


def load_data_dir(
    data_dir: PathLike,
    *,
    max_videos: Optional[int] = None,
    feature_dim: Optional[int] = None,
    nonfinite: str = "error",
    unused: str = "error",
    feature_stride: Optional[int] = None,
    feature_window: Optional[int] = None,
    feature_fps: Optional[float] = None,
) -> WSTALDataset:
    """Load a THUMOS14 folder in whichever layout it holds (:func:`detect_layout`).

    Args:
        data_dir: the folder.
        max_videos, feature_dim, nonfinite, unused: as :func:`~.thumos.load_thumos14` and
            :func:`~.per_video.load_per_video` take them.
        feature_stride, feature_window, feature_fps: the per-video layout's feature timing where its JSON
            does not state it (see :func:`~.per_video.load_per_video`). The Thumos14reduced layout's
            features are 16-frame snippets at 25 fps; other values are refused there.

    Returns:
        The dataset.

    Raises:
        FileNotFoundError: a file or folder the layout needs is missing.
        ValueError: what the layout's loader refuses, or a timing argument given for the Thumos14reduced
            layout that is not its own.
    """
    layout = detect_layout(data_dir)
    if layout != "thumos14reduced":
        return load_per_video(
            data_dir,
            max_videos=max_videos,
            feature_dim=feature_dim,
            nonfinite=nonfinite,
            unused=unused,
            feature_stride=feature_stride,
            feature_window=feature_window,
            feature_fps=feature_fps,
        )
    given = {"feature_stride": feature_stride, "feature_window": feature_window, "feature_fps": feature_fps}
    own = THUMOS14_REDUCED_TIMING
    wrong = {
        name: value
        for (name, value), fixed in zip(given.items(), (own.stride, own.window, own.fps))
        if value is not None and value != fixed
    }
    if wrong:
        raise ValueError(
            f"{', '.join(f'{k}={v:g}' for k, v in wrong.items())} (--{next(iter(wrong)).replace('_', '-')}): "
            f"the Thumos14reduced layout's features are 16-frame snippets at 25 fps; the feature timing "
            f"arguments are for the per-video layout ({ACTIONFORMER_JSON} or {OPENTAD_JSON})"
        )
    try:
        return load_thumos14(
            data_dir, max_videos=max_videos, feature_dim=feature_dim, nonfinite=nonfinite, unused=unused
        )
    except FileNotFoundError as error:
        if Path(data_dir).is_dir() and not (Path(data_dir) / ANNOTATIONS_DIR).exists():
            raise FileNotFoundError(
                f"{error}; nor is it a per-video folder ({ACTIONFORMER_JSON} or {OPENTAD_JSON})"
            ) from None
        raise
