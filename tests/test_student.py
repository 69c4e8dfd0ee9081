"""Stage 3, the boundary-regression student: its pseudo instances, target assignment, losses, network and
detections against slow obvious references, and the detector with Stage 3 end to end (training, the saved
file, resume, the outputs)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scripts import two_stage

from wstal.config import DetectorConfig, ScoringSettings, StudentSettings
from wstal.detect import support
from wstal.evaluator import evaluate
from wstal.inference import detect
from wstal.model import FusionEmbed
from wstal.pipeline import DetectorRunner
from wstal.stages import window_instances
from wstal.student import (
    BoundaryStudent,
    Instances,
    distance_iou,
    level_range,
    locations,
    pseudo_instances,
    refine,
    sigmoid_focal_loss,
    student_detections,
    student_losses,
    student_segments,
    student_targets,
)
from wstal.synthetic import make_synthetic_thumos
from wstal.trained import DetectorFileError, TrainedDetector

# ------------------------------------------------------------------------------ pseudo instances


def test_pseudo_instances_by_hand() -> None:
    rows = [
        (0, 0.80, 2.0, 6.0),
        (0, 0.70, 2.5, 6.0),  # tIoU 0.875 with the first: NMS removes it
        (2, 0.60, 8.0, 10.0),
        (1, 0.95, 0.0, 3.0),  # class 1 is not labelled
        (2, 0.10, 12.0, 14.0),  # below 0.2 x 0.8
        (0, 0.30, 5.0, 5.0),  # empty
    ]
    label = np.array([1.0, 0.0, 1.0])
    found = pseudo_instances(rows, label, StudentSettings(min_score=0.2, nms_iou=0.5))
    assert found.segments.tolist() == [[2.0, 6.0], [8.0, 10.0]]
    assert found.classes.tolist() == [0, 2]
    assert found.weights.tolist() == pytest.approx([1.0, 0.6 / 0.8])
    capped = pseudo_instances(rows, label, StudentSettings(min_score=0.0, max_instances=1))
    assert capped.segments.tolist() == [[2.0, 6.0]]
    # without a detection of a labelled class there is nothing to learn from
    assert pseudo_instances(rows, np.array([0.0, 1.0, 0.0]), StudentSettings()).classes.tolist() == [1]
    assert len(pseudo_instances([], label, StudentSettings()).classes) == 0


def test_window_instances_keep_what_the_window_mostly_holds() -> None:
    found = Instances(
        torch.tensor([[2.0, 6.0], [9.0, 14.0], [11.0, 12.0]]),
        torch.tensor([0, 1, 2]),
        torch.tensor([1.0, 0.5, 0.3]),
    )
    cut = window_instances(found, 4, 12)
    # [2, 6) keeps 2 of 4 snippets (kept, clipped), [9, 14) keeps 3 of 5 (kept), [11, 12) whole
    assert cut.segments.tolist() == [[0.0, 2.0], [5.0, 8.0], [7.0, 8.0]]
    assert cut.classes.tolist() == [0, 1, 2] and cut.weights.tolist() == pytest.approx([1.0, 0.5, 0.3])
    assert window_instances(found, 0, 3).segments.tolist() == []


# ------------------------------------------------------------------------------ targets


def _targets_reference(instances: Instances, t: int, k: int, levels: int, radius: float):
    """One location and one instance at a time, in float64."""
    out = []
    for level in range(levels):
        s = 2**level
        length = math.ceil(t / s)
        cls, seg, weight = np.zeros((length, k)), np.zeros((length, 2)), np.zeros(length)
        low, high = (
            (0.0 if level == 0 else 2.0 ** (level + 1)),
            (math.inf if level == levels - 1 else 2.0 ** (level + 2)),
        )
        for i in range(length):
            c = (i + 0.5) * s
            best = None
            for (a, b), label, w in zip(
                instances.segments.double().tolist(),
                instances.classes.tolist(),
                instances.weights.double().tolist(),
            ):
                mid = (a + b) / 2
                longer = max(c - a, b - c)
                if a < c < b and mid - radius * s <= c <= mid + radius * s and low <= longer < high:
                    if best is None or b - a < best[0]:
                        best = (b - a, a, b, label, w)
            if best is not None:
                _, a, b, label, w = best
                cls[i, label], seg[i], weight[i] = 1.0, (a, b), w
        out.append((cls, seg, weight))
    return out


@settings(max_examples=40, deadline=None)
@given(
    t=st.integers(1, 70),
    spans=st.lists(
        st.tuples(st.integers(0, 69), st.integers(1, 40), st.integers(0, 2), st.floats(0.05, 1.0)), max_size=6
    ),
    radius=st.sampled_from([0.5, 1.5, 3.0]),
)
def test_student_targets_match_a_loop(t: int, spans, radius: float) -> None:
    rows = [(float(a), float(min(a + n, t + 5)), c, w) for a, n, c, w in spans]
    # distinct lengths, so "the shortest" is one instance (ties are broken by position in both, but the
    # loop takes the first and argmin the first too)
    instances = Instances(
        torch.tensor([[a, b] for a, b, _, _ in rows]).reshape(-1, 2).float(),
        torch.tensor([c for _, _, c, _ in rows], dtype=torch.long),
        torch.tensor([w for _, _, _, w in rows]).float(),
    )
    found = student_targets(instances, t, 3, levels=4, radius=radius)
    expected = _targets_reference(instances, t, 3, 4, radius)
    assert len(found) == 4
    for (cls, seg, weight), (cls_ref, seg_ref, weight_ref) in zip(found, expected):
        np.testing.assert_array_equal(cls.numpy(), cls_ref)
        np.testing.assert_allclose(seg.numpy(), seg_ref, rtol=0, atol=1e-6)
        np.testing.assert_allclose(weight.numpy(), weight_ref, rtol=0, atol=1e-6)


def test_level_ranges_tile_the_lengths() -> None:
    ranges = [level_range(level, 5) for level in range(5)]
    assert ranges[0][0] == 0 and ranges[-1][1] == math.inf
    assert all(ranges[i][1] == ranges[i + 1][0] for i in range(4))
    assert locations(4, 2).tolist() == [2.0, 6.0, 10.0, 14.0]


# ------------------------------------------------------------------------------ losses


def test_sigmoid_focal_loss_against_float64() -> None:
    logits = torch.randn(50, 3, dtype=torch.float64) * 3
    targets = (torch.rand(50, 3) > 0.7).double()
    p = 1 / (1 + np.exp(-logits.numpy()))
    y = targets.numpy()
    for alpha, gamma in ((0.25, 2.0), (0.5, 0.0), (0.9, 1.0)):
        ref = -(alpha * y * (1 - p) ** gamma * np.log(p) + (1 - alpha) * (1 - y) * p**gamma * np.log(1 - p))
        got = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma)
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)
    # gamma 0, alpha 0.5: half the binary cross-entropy
    half = sigmoid_focal_loss(logits, targets, alpha=0.5, gamma=0.0)
    torch.testing.assert_close(
        half, 0.5 * F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    )


def test_distance_iou_by_hand() -> None:
    a = torch.tensor([[0.0, 4.0], [0.0, 4.0], [0.0, 2.0], [0.0, 4.0]])
    b = torch.tensor([[0.0, 4.0], [2.0, 6.0], [4.0, 6.0], [1.0, 3.0]])
    # identical: 1; half overlap: IoU 2/6, centres 2 apart over a cover of 6; disjoint: IoU 0, centres 4
    # apart over 6; nested with one centre: IoU 0.5
    expected = [1.0, 2 / 6 - 4 / 36, 0 - 16 / 36, 0.5]
    assert distance_iou(a, b).tolist() == pytest.approx(expected)


def _student(k: int = 3, levels: int = 3, fusion: str = "concat") -> BoundaryStudent:
    torch.manual_seed(0)
    return BoundaryStudent(FusionEmbed(fusion, 6, 5, 8), k, hidden=8, levels=levels, dropout=0.0)


def test_the_student_sees_padding_as_absent() -> None:
    """A video alone and padded in a batch with a longer one: the same outputs on its valid locations, and
    each level has ceil(t / 2**l) of them."""
    model = _student().eval()
    short, long = (
        (torch.randn(1, 13, 6), torch.randn(1, 13, 5)),
        (torch.randn(1, 21, 6), torch.randn(1, 21, 5)),
    )
    alone = model(*short)
    rgb = torch.cat([F.pad(short[0], (0, 0, 0, 8)), long[0]])
    flow = torch.cat([F.pad(short[1], (0, 0, 0, 8)), long[1]])
    mask = torch.arange(21) < torch.tensor([[13], [21]])
    batched = model(rgb, flow, mask)
    for level in range(3):
        valid = math.ceil(13 / 2**level)
        assert int(batched.masks[level][0].sum()) == valid and batched.logits[level].shape[1] == math.ceil(
            21 / 2**level
        )
        torch.testing.assert_close(
            batched.logits[level][0, :valid], alone.logits[level][0], atol=1e-5, rtol=1e-4
        )
        torch.testing.assert_close(
            batched.offsets[level][0, :valid], alone.offsets[level][0], atol=1e-5, rtol=1e-4
        )
        assert (batched.offsets[level][0, valid:] == 0).all() and (alone.offsets[level] > 0).all()
    segments, probs = student_segments(batched, 0, 13)
    assert segments.shape == (7 + 4 + 13, 2) and probs.shape == (24, 3)
    assert (segments >= 0).all() and (segments <= 13).all()


def test_student_losses_against_a_direct_computation() -> None:
    model = _student(k=2, levels=2)
    rgb, flow = torch.randn(2, 10, 6), torch.randn(2, 10, 5)
    mask = torch.arange(10) < torch.tensor([[10], [7]])
    out = model(rgb, flow, mask)
    instances = [
        Instances(torch.tensor([[1.0, 4.0], [5.0, 9.0]]), torch.tensor([0, 1]), torch.tensor([1.0, 0.5])),
        Instances(torch.tensor([[2.0, 6.0]]), torch.tensor([1]), torch.tensor([0.8])),
    ]
    per_video = [
        student_targets(found, int(m.sum()), 2, levels=2, radius=1.5) for found, m in zip(instances, mask)
    ]
    targets = []
    for level in range(2):
        length = out.logits[level].shape[1]
        parts = []
        for part in range(3):
            padded = [
                F.pad(
                    v[level][part],
                    (0, 0) * (v[level][part].dim() - 1) + (0, length - v[level][part].shape[0]),
                )
                for v in per_video
            ]
            parts.append(torch.stack(padded))
        targets.append(tuple(parts))
    losses = student_losses(out, targets, regression_weight=2.0)
    values = {k: float(v.detach()) for k, v in losses.items()}
    # directly: every valid location and class, a positive one weighted by its instance's weight
    cls_sum, reg_sum, weight_sum = 0.0, 0.0, 0.0
    for level in range(2):
        for b in range(2):
            for i in range(int(out.masks[level][b].sum())):
                cls_t, seg_t, w = (targets[level][p][b, i].double() for p in range(3))
                logit = out.logits[level][b, i].double()
                p = torch.sigmoid(logit)
                focal = -(
                    0.25 * cls_t * (1 - p) ** 2 * torch.log(p) + 0.75 * (1 - cls_t) * p**2 * torch.log(1 - p)
                )
                cls_sum += float(focal.sum().detach()) * (float(w) if w > 0 else 1.0)
                if w > 0:
                    c = (i + 0.5) * 2**level
                    d = out.offsets[level][b, i].double()
                    pred = torch.stack([c - d[0], c + d[1]])[None]
                    reg_sum += float((1 - distance_iou(pred, seg_t[None])).detach()) * float(w)
                    weight_sum += float(w)
    assert weight_sum > 0
    assert values["cls"] == pytest.approx(cls_sum / weight_sum, rel=1e-4)
    assert values["reg"] == pytest.approx(reg_sum / weight_sum, rel=1e-4)
    assert values["total"] == pytest.approx(cls_sum / weight_sum + 2 * reg_sum / weight_sum, rel=1e-4)
    losses["total"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_student_losses_without_positives_are_finite() -> None:
    model = _student(k=2, levels=2)
    out = model(torch.randn(1, 8, 6), torch.randn(1, 8, 5))
    empty = student_targets(Instances.empty(), 8, 2, levels=2, radius=1.5)
    losses = student_losses(out, [tuple(p[None] for p in level) for level in empty])
    assert (
        torch.isfinite(losses["total"])
        and float(losses["reg"].detach()) == 0.0
        and float(losses["cls"].detach()) > 0
    )


def test_student_detections_by_hand() -> None:
    segments = torch.tensor([[0.0, 4.0], [10.0, 14.0], [3.0, 3.0]])
    probs = torch.tensor([[0.9, 0.2], [0.1, 0.8], [1.0, 1.0]])  # the last segment is empty
    rows = student_detections(segments, probs, torch.tensor([0.7, 0.3]), ScoringSettings(class_threshold=0.5))
    # class 1's video score is below the threshold: class 0 only, each segment times 0.7, soft-NMS keeps both
    assert [r[0] for r in rows] == [0, 0]
    assert [r[1] for r in rows] == pytest.approx([0.63, 0.07])
    assert [r[2:] for r in rows] == [(0.0, 4.0), (10.0, 14.0)]


# ------------------------------------------------------------------------------ the detector with Stage 3


@pytest.fixture(scope="module")
def tiny() -> object:
    return make_synthetic_thumos(num_train=8, num_test=6, dim=16, seed=0)


def _config(**changes: object) -> DetectorConfig:
    return DetectorConfig(**changes).with_options(epochs=1, width=16, stage3=True)


def test_stage3_trains_on_the_training_detections_and_is_the_output(tiny, tmp_path: Path) -> None:
    # trained enough (10 epochs at a high learning rate) that the two stages detect on the training videos
    config = _config().with_options(epochs=10)
    stages = ("base", "stage1", "stage2", "stage3")
    config = dataclasses.replace(
        config, **{n: dataclasses.replace(getattr(config, n), lr=1e-2) for n in stages}
    )
    runner = DetectorRunner(tiny, config, show_progress=False)
    trained = runner.train()
    assert trained.student is not None and trained.config.student.enabled
    kinds = sorted(key.kind for key in runner.train_stage._trained)
    assert kinds == ["base", "stage1", "stage2", "stage3"]
    # the pseudo instances are the two stages' training detections of each video's labelled classes
    two = runner.two_stage("mutual+", "concat+")
    rows = detect(two, tiny.train).rows["two_stage"]
    instances = runner.pseudo_instances("mutual+", "concat+")
    assert sum(len(found.classes) for found in instances.values()) > 0
    for v in tiny.train:
        expected = pseudo_instances(rows[v.name], v.label, runner.config.student)
        assert torch.equal(instances[v.name].segments, expected.segments)
        assert set(instances[v.name].classes.tolist()) <= set(np.flatnonzero(v.label).tolist())
    result = evaluate(trained, tiny)
    assert result.final == "three_stage" and result.detectors == [
        "three_stage",
        "student",
        "two_stage",
        "stage1_only",
        "base",
    ]
    # Stage 3's output is the two stages' detections refined by the student's
    found = result.inference
    for v in tiny.test:
        expected = refine(
            found.rows["two_stage"][v.name],
            found.rows["student"][v.name],
            *found.student[v.name],
            trained.config.student,
            trained.config.scoring,
        )
        assert found.rows["three_stage"][v.name] == expected
    assert result.detections == result.inference.detections("three_stage")
    assert "| Stage 3 (two stages refined by the student) |" in result.table()
    assert "| Stage-3 student alone |" in result.table()
    assert result.as_dict()["stage3_fusion"] == "concat+" and result.as_dict()["final"] == "three_stage"
    # saved and loaded: the same detections, the file holds the student
    loaded = TrainedDetector.load(trained.save(tmp_path / "detector.pt"))
    assert loaded.student is not None
    again = detect(loaded, tiny.test)
    assert again.rows["three_stage"] == result.inference.rows["three_stage"]


def test_without_stage3_nothing_of_it_runs(tiny) -> None:
    runner = DetectorRunner(tiny, _config().with_options(stage3=False), show_progress=False)
    trained = runner.train()
    assert trained.student is None and "stage3" not in trained.networks()
    result = evaluate(trained, tiny)
    assert result.final == "two_stage" and result.three_stage is None
    assert "three_stage" not in result.as_dict()["results"]


def test_a_detector_file_must_hold_the_student_its_configuration_names(tiny, tmp_path: Path) -> None:
    trained = DetectorRunner(tiny, _config(), show_progress=False).train()
    state = trained.state()
    del state["networks"]["stage3"]
    with pytest.raises(DetectorFileError, match="missing network"):
        TrainedDetector.from_state(state)
    state = trained.state()
    state["config"]["student"]["enabled"] = False
    with pytest.raises(DetectorFileError, match="stage3 its configuration has no use for"):
        TrainedDetector.from_state(state)
    with pytest.raises(ValueError, match="student: the configuration has Stage 3 enabled, got no student"):
        dataclasses.replace(trained, student=None)
    # a file written before Stage 3 (version 1) is refused with what to do
    state = trained.state()
    state["version"] = 1
    with pytest.raises(DetectorFileError, match="format version 1; this code reads version 2 \\(retrain"):
        TrainedDetector.from_state(state)


def test_stage3_key_follows_its_inputs(tiny) -> None:
    runner = DetectorRunner(tiny, _config(), show_progress=False)
    stage = runner.student_stage("mutual+", "concat+", "concat+", "concat")
    assert stage.key.upstream == runner.classifier_stage("mutual+", "concat+", "concat").key
    assert stage.name == "stage3_concat_mutual+_concat+_concat+"
    for change in (
        {"student": StudentSettings(enabled=True, min_score=0.5)},
        {"scoring": ScoringSettings(soft_nms_sigma=0.5)},  # shapes the training detections
    ):
        other = DetectorRunner(tiny, dataclasses.replace(runner.config, **change), show_progress=False)
        other._instances = runner._instances  # the key needs no training
        assert other.student_stage("mutual+", "concat+", "concat+", "concat").key != stage.key
    # how the output refines the two stages' detections is inference only: the same trained student
    refined = dataclasses.replace(runner.config.student, vote_iou=0.9, score_weight=0.0)
    other = DetectorRunner(tiny, dataclasses.replace(runner.config, student=refined), show_progress=False)
    other._instances = runner._instances
    assert other.student_stage("mutual+", "concat+", "concat+", "concat").key == stage.key


def test_the_command_line_runs_stage3_and_resumes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = ["--max-videos", "6", "--synthetic-dim", "16", "--width", "16", "--threads", "1", "--quiet"]
    out = tmp_path / "run"
    assert two_stage([*tiny, "--out", str(out), "--epochs", "1", "--stage3"]) == 0
    printed = capsys.readouterr().out
    assert "/ Stage 3 concat+," in printed and "| Stage 3 (two stages refined by the student) |" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["final"] == "three_stage" and results["config"]["student"]["enabled"] is True
    checkpoints = sorted(p.name for p in (out / "checkpoints").glob("*.pt"))
    assert "stage3_concat_concat+_concat+_concat+.pt" in checkpoints
    detections = json.loads((out / "detections.json").read_text())["results"]
    assert (out / "detector.pt").is_file() and len(detections) == 6
    # resumed: every stage loaded, nothing trained again, the same detections
    assert two_stage([*tiny, "--out", str(out), "--epochs", "1", "--stage3", "--resume"]) == 0
    log = capsys.readouterr().out
    assert log.count("loaded finished") == 4 and "epoch 1/1" not in log
    assert json.loads((out / "detections.json").read_text())["results"] == detections


def test_support_against_a_loop() -> None:
    torch.manual_seed(1)
    starts = torch.rand(7) * 20
    segments = torch.stack([starts, starts + 1 + torch.rand(7) * 10], -1)
    reference = segments[torch.randperm(7)[:4]] + torch.randn(4, 2)
    reference = torch.stack([reference.min(1).values, reference.max(1).values], -1)
    scores = torch.rand(4)
    expected = []
    for a, b in segments.double().tolist():
        best = 0.0
        for (c, d), s in zip(reference.double().tolist(), scores.double().tolist()):
            inter = max(0.0, min(b, d) - max(a, c))
            best = max(best, s * inter / (max(b, d) - min(a, c)))
        expected.append(best)
    assert support(segments, reference, scores).tolist() == pytest.approx(expected, rel=1e-5)
    assert support(segments, torch.zeros(0, 2), torch.zeros(0)).tolist() == [0.0] * 7


def test_refine_by_hand() -> None:
    teacher = [(0, 0.8, 2.0, 6.0), (1, 0.5, 10.0, 14.0), (2, 0.9, 30.0, 34.0)]
    student = [(0, 0.4, 2.0, 8.0), (1, 0.5, 10.0, 14.0)]  # no student detection of class 2
    locations = torch.tensor([[2.0, 8.0], [3.0, 6.0], [20.0, 22.0]])
    probs = torch.tensor([[0.5, 0.1, 0.0], [0.25, 0.1, 0.0], [1.0, 0.2, 0.0]])
    settings = StudentSettings(vote_iou=0.5, score_weight=0.5)
    rows = refine(teacher, student, locations, probs, settings, ScoringSettings())
    # class 0: [2, 6] with tIoU 4/6 to [2, 8] and 3/4 to [3, 6], both vote; its own weight is the class's
    # top probability in the video, 1.0 (at [20, 22], which does not overlap): (1 x [2, 6] + 0.5 x [2, 8]
    # + 0.25 x [3, 6]) / 1.75; score sqrt(0.8 x 0.4 x 4/6)
    start, end = (2 + 1 + 0.75) / 1.75, (6 + 4 + 1.5) / 1.75
    by_class = {r[0]: r for r in rows}
    assert by_class[0][1] == pytest.approx(math.sqrt(0.8 * 0.4 * 4 / 6), rel=1e-5)
    assert by_class[0][2:] == pytest.approx((start, end), rel=1e-6)
    # class 1: no location overlaps [10, 14]: its boundaries stay; score sqrt(0.5 x 0.5)
    assert by_class[1][2:] == pytest.approx((10.0, 14.0)) and by_class[1][1] == pytest.approx(0.5)
    # class 2: nothing of the student supports it: sqrt(0.9 x 1e-8), last
    assert by_class[2][1] == pytest.approx(math.sqrt(0.9 * 1e-8), rel=1e-5) and rows[-1][0] == 2
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)
    # w = 0 keeps the two stages' scores
    plain = refine(teacher, student, locations, probs, StudentSettings(score_weight=0.0), ScoringSettings())
    assert sorted(r[1] for r in plain) == pytest.approx([0.5, 0.8, 0.9])


def test_refine_without_votes_or_support_gives_the_two_stages_detections_back() -> None:
    """No second suppression: overlapping detections of the two stages keep their (soft-NMS'd) scores."""
    teacher = [(0, 0.9, 2.0, 6.0), (0, 0.6, 2.5, 6.0), (1, 0.7, 0.0, 3.0), (0, 0.2, 2.0, 5.5)]
    locations, probs = torch.tensor([[20.0, 22.0]]), torch.tensor([[1.0, 1.0]])
    settings = StudentSettings(vote_iou=1.0, score_weight=0.0)
    rows = refine(teacher, [], locations, probs, settings, ScoringSettings())
    expected = sorted(teacher, key=lambda r: -r[1])
    assert [r[0] for r in rows] == [r[0] for r in expected]
    assert [v for r in rows for v in r[1:]] == pytest.approx([v for r in expected for v in r[1:]])
    assert len(refine(teacher, [], locations, probs, settings, ScoringSettings(max_detections=2))) == 2


def test_a_single_modality_run_gives_stage3_that_modality_alone(tiny) -> None:
    runner = DetectorRunner(tiny, _config(), show_progress=False)
    trained = runner.train("rgb", "rgb")
    assert trained.config.stage3_fusion == "rgb" and trained.student.fusion.strategy.modalities == ("rgb",)
    assert runner.train("rgb", "rgb", "flow").config.stage3_fusion == "flow"  # named outright, it is used
