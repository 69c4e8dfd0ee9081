"""ActivityNet-style detection JSON, the exchange format of WSTAL code (proposals and detections).

The file is ``{"version": ..., "results": {video: [{"label": name, "score": s, "segment": [start, end]}]},
"external_data": {}}`` with times in seconds and labels as class *names*; this is what the ActivityNet
evaluator reads and what P-MIL reads its Stage-1 proposals from (class-agnostic proposals carry any label
in ``classes``). Readers only need ``results``; the other keys are written for compatibility.

Axis legend: none (no tensors here).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from .evaluation import Detection

__all__ = ["read_activitynet_json", "write_activitynet_json"]

PathLike = Union[str, Path]


def write_activitynet_json(
    path: PathLike, detections: Mapping[str, Sequence[Detection]], classes: Sequence[str]
) -> None:
    """Write detections as ActivityNet-style JSON.

    Args:
        path: the output file (parent folders must exist).
        detections: per video name its detections (class index, score, start and end in seconds).
        classes: class names by index; labels are written as names.

    Raises:
        ValueError: a label is not a valid class index or a number is not finite.

    Example:
        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = os.path.join(tmp, "dets.json")
        ...     write_activitynet_json(path, {"v": [Detection(1, 0.9, 1.5, 4.0)]}, ["A", "B"])
        ...     read_activitynet_json(path, ["A", "B"])
        {'v': [Detection(label=1, score=0.9, start=1.5, end=4.0)]}
    """
    results: dict[str, list[dict[str, Any]]] = {}
    for video, items in detections.items():
        rows = []
        for label, score, start, end in items:
            if (
                isinstance(label, bool)
                or not isinstance(label, numbers.Integral)
                or not 0 <= label < len(classes)
            ):
                raise ValueError(
                    f"video {video!r}: label must be a class index in [0, {len(classes)}), got {label!r}"
                )
            values = (float(score), float(start), float(end))
            if not all(math.isfinite(x) for x in values):
                raise ValueError(f"video {video!r}: score and segment must be finite, got {values}")
            rows.append({"label": classes[int(label)], "score": values[0], "segment": [values[1], values[2]]})
        results[str(video)] = rows
    document = {"version": "dmf-fusion WSTAL detections", "results": results, "external_data": {}}
    Path(path).write_text(json.dumps(document))


def _entry(video: str, position: int, entry: Any, class_index: Mapping[str, int]) -> Detection:
    where = f"results[{video!r}][{position}]"
    if not isinstance(entry, dict) or not {"label", "score", "segment"} <= entry.keys():
        raise ValueError(f"{where} must be an object with 'label', 'score' and 'segment', got {entry!r}")
    label, score, segment = entry["label"], entry["score"], entry["segment"]
    if label not in class_index:
        raise ValueError(
            f"{where}: unknown label {label!r}; expected one of the {len(class_index)} class names"
        )
    if not isinstance(segment, list) or len(segment) != 2:
        raise ValueError(f"{where}: segment must be [start, end], got {segment!r}")
    numbers = (score, *segment)
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in numbers):
        raise ValueError(
            f"{where}: score and segment must be finite numbers, got score {score!r}, segment {segment!r}"
        )
    return Detection(class_index[label], float(score), float(segment[0]), float(segment[1]))


def read_activitynet_json(path: PathLike, classes: Sequence[str]) -> dict[str, list[Detection]]:
    """Read ActivityNet-style detection JSON written by this module or by other WSTAL code.

    Args:
        path: the JSON file.
        classes: class names by index; every label in the file must be one of them.

    Returns:
        Per video name its detections, in file order, labels as class indices.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not valid JSON of this shape, or names an unknown class.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(document, dict) or not isinstance(document.get("results"), dict):
        raise ValueError(f"{path}: expected an object with a 'results' object mapping videos to detections")
    class_index = {name: index for index, name in enumerate(classes)}
    detections = {}
    for video, entries in document["results"].items():
        if not isinstance(entries, list):
            raise ValueError(f"{path}: results[{video!r}] must be a list, got {type(entries).__name__}")
        try:
            detections[video] = [_entry(video, i, entry, class_index) for i, entry in enumerate(entries)]
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
    return detections
