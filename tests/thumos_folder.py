"""A tiny data folder in the real THUMOS14 I3D layout, for tests of ``--data-dir`` and the loader.

Shared by tests/test_detector.py (the CLI end to end) and tests/test_broken_data.py (broken folders).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
