"""Tiny data folders in the real THUMOS14 I3D layouts, for tests of ``--data-dir`` and the loaders.

Shared by tests/test_detector.py (the CLI end to end), tests/test_broken_data.py (broken folders) and
tests/test_data_layouts.py (the per-video layout and the converter).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from wstal.per_video import ACTIONFORMER_JSON, CLASS_FILE
from wstal.thumos import ANNOTATIONS_DIR, FEATURES_FILE

CLASSES = ["CliffDiving", "Diving", "LongJump"]


def object_array(items: list) -> np.ndarray:
    """A 1-D object array holding ``items`` element-wise (equal-shaped items stay separate objects)."""
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def thumos_format_folder(root: Path, num_train: int = 4, num_test: int = 3) -> Path:
    """A tiny data folder in the real THUMOS14 I3D layout (features 1024 + 1024 wide, the seven
    annotation arrays, the ambiguous regions), filled with random features."""
    rng = np.random.default_rng(0)
    names = [f"video_validation_{i}" for i in range(num_train)] + [f"video_test_{i}" for i in range(num_test)]
    lengths = rng.integers(20, 40, len(names))
    segments, labels = [], []
    for i in range(len(names)):
        start = 0.64 * (3 + i % 5)
        segments.append([[start, start + 3.2]])
        labels.append([CLASSES[i % 3]])
    annotations = root / ANNOTATIONS_DIR
    annotations.mkdir(parents=True)
    arrays = {
        "videoname": np.array([n.encode() for n in names]),
        "subset": np.array([b"validation"] * num_train + [b"test"] * num_test),
        "classlist": np.array([c.encode() for c in CLASSES]),
        "duration": (0.64 * lengths)[:, None],
        "segments": object_array(segments),
        "labels": object_array(labels),
        "labels_all": object_array(labels),
    }
    for name, array in arrays.items():
        np.save(annotations / f"{name}.npy", array, allow_pickle=True)
    (annotations / "Ambiguous_test.txt").write_text("video_test_0  0.0 0.5\n")
    features = object_array([rng.standard_normal((int(n), 2048)).astype(np.float32) for n in lengths])
    np.save(root / FEATURES_FILE, features, allow_pickle=True)
    return root


def per_video_folder(root: Path, num_train: int = 4, num_test: int = 3, *, fps: float = 30.0) -> Path:
    """A tiny folder in ActionFormer's per-video layout: ``annotations/thumos14.json`` (subsets "Validation"
    and "Test", per-video ``fps``, ``label_id``; one Ambiguous region in ``video_test_0``),
    ``annotations/category_idx.txt`` and ``i3d_features/<video>.npy`` ``(T, 2048)`` float32, one feature every
    4 frames over 16-frame clips, durations that match the feature counts."""
    rng = np.random.default_rng(1)
    names = [f"video_validation_{i}" for i in range(num_train)] + [f"video_test_{i}" for i in range(num_test)]
    lengths = rng.integers(100, 160, len(names))
    (root / "annotations").mkdir(parents=True)
    (root / "i3d_features").mkdir()
    database = {}
    for i, (name, length) in enumerate(zip(names, lengths)):
        start, label = 1.0 + 0.5 * (i % 5), i % 3
        database[name] = {
            "subset": "Validation" if i < num_train else "Test",
            "duration": ((int(length) - 1) * 4 + 16) / fps,
            "fps": fps,
            "annotations": [{"label": CLASSES[label], "segment": [start, start + 2.5], "label_id": label}],
        }
        features = rng.standard_normal((int(length), 2048)).astype(np.float32)
        np.save(root / "i3d_features" / f"{name}.npy", features, allow_pickle=False)
    database["video_test_0"]["annotations"].append({"label": "Ambiguous", "segment": [0.0, 0.5]})
    (root / ACTIONFORMER_JSON).write_text(json.dumps({"version": "tiny", "database": database}))
    (root / CLASS_FILE).write_text("".join(f"{c}\n" for c in CLASSES))
    return root
