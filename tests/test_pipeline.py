"""The detector pipeline as stages: validated configuration, stage keys, the generic trainer's cache, and
the command line's machine defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import wstal.inference as inference
import wstal.pipeline as pipeline
from wstal import launch
from wstal.config import (
    CAPACITY_FIELDS,
    PRESETS,
    DetectorConfig,
    GroupingSettings,
    ProposalSettings,
    PseudoLabelSettings,
    ScoringSettings,
    StageSettings,
    preset_config,
)
from wstal.detect import base_detections, to_detections
from wstal.distributed import native_bf16, resolve_amp
from wstal.evaluator import train_and_evaluate
from wstal.inference import detect
from wstal.pipeline import DetectorRunner
from wstal.proposals import segment_iou
from wstal.recall import evaluate_proposals
from wstal.stages import BaseStage, ClassifierStage, RPNStage, StageKey
from wstal.synthetic import make_synthetic_thumos

SETTINGS = {
    "epochs": 2,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "batch_size": 4,
    "max_len": 64,
    "hidden": 16,
    "dropout": 0.1,
}


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: DetectorConfig(stage1_fusion="mutal+"), ValueError, "DetectorConfig.stage1_fusion must be one of rgb"),
        (lambda: DetectorConfig(stage2_fusion="rgb+"), ValueError, "DetectorConfig.stage2_fusion"),
        (
            lambda: DetectorConfig(dmf_attention="dots"),
            ValueError,
            "DetectorConfig.dmf_attention must be one of 'gate', 'dot', got 'dots'",
        ),
        (
            lambda: DetectorConfig(proposals=ScoringSettings()),
            TypeError,
            "DetectorConfig.proposals must be a finite ProposalSettings",
        ),
        (
            lambda: DetectorConfig(completeness_source="boundry"),
            ValueError,
            "DetectorConfig.completeness_source",
        ),
        (lambda: DetectorConfig(alpha=-0.5), ValueError, "DetectorConfig.alpha must be >= 0, got -0.5"),
        (
            lambda: DetectorConfig(alpha=float("nan")),
            TypeError,
            "DetectorConfig.alpha must be a finite float",
        ),
        (
            lambda: DetectorConfig(base_topk_ratio=0.5),
            ValueError,
            "DetectorConfig.base_topk_ratio must be >= 1",
        ),
        (
            lambda: DetectorConfig(embed_dim=True),
            TypeError,
            "DetectorConfig.embed_dim must be a finite int, got True",
        ),
        (
            lambda: DetectorConfig(base=(1, 2)),
            TypeError,
            "DetectorConfig.base must be a finite StageSettings",
        ),
        (lambda: DetectorConfig(epoch=3), TypeError, "epoch"),
        (
            lambda: StageSettings(**{**SETTINGS, "epochs": 0}),
            ValueError,
            "StageSettings.epochs must be >= 1, got 0",
        ),
        (lambda: StageSettings(**{**SETTINGS, "lr": "1e-3"}), TypeError, "StageSettings.lr"),
        (
            lambda: StageSettings(**{**SETTINGS, "dropout": 1.0}),
            ValueError,
            "StageSettings.dropout must be in [0, 1)",
        ),
        (
            lambda: PseudoLabelSettings(source="boundry"),
            ValueError,
            "PseudoLabelSettings.source must be one of 'boundary', 'attention', got 'boundry'",
        ),
        (lambda: GroupingSettings(thresholds=()), ValueError, "GroupingSettings.thresholds"),
        (lambda: GroupingSettings(thresholds=(0.5, 1.5)), ValueError, "GroupingSettings.thresholds"),
        (lambda: GroupingSettings(nms_iou=1.5), ValueError, "GroupingSettings.nms_iou must be in [0, 1]"),
        (
            lambda: ScoringSettings(class_threshold=1.5),
            ValueError,
            "ScoringSettings.class_threshold must be in [0, 1], got 1.5",
        ),
        (
            lambda: ProposalSettings(max_proposals=0),
            ValueError,
            "ProposalSettings.max_proposals must be >= 1",
        ),
        (
            lambda: preset_config("thumos"),
            ValueError,
            "preset must be one of 'default', 'quick', 'thumos14', got 'thumos'",
        ),
    ],
    ids=lambda x: None,
)
def test_a_bad_configuration_fails_at_construction_naming_the_field(make, error, message) -> None:
    with pytest.raises(error) as caught:
        make()
    assert message in str(caught.value)


def test_replace_validates_too() -> None:
    with pytest.raises(ValueError, match=r"StageSettings\.batch_size"):
        dataclasses.replace(DetectorConfig().base, batch_size=0)
    with pytest.raises(ValueError, match=r"DetectorConfig\.stage1_fusion"):
        DetectorConfig().with_options(stage1_fusion="nope")


def test_configurations_are_hashable_and_equal_by_value() -> None:
    a, b = DetectorConfig(), DetectorConfig()
    assert a == b and hash(a) == hash(b)
    assert {a: 1}[b] == 1
    assert DetectorConfig(seed=1) != a


@pytest.fixture(scope="module")
def tiny() -> object:
    return make_synthetic_thumos(num_train=8, num_test=6, dim=16, seed=0)


def _config(**changes: object) -> DetectorConfig:
    return DetectorConfig(**changes).with_options(epochs=1, width=16)


def test_stage_keys_hold_what_each_stage_depends_on(tiny) -> None:
    config = _config()
    base = BaseStage("concat", config, tiny)
    assert base.key == BaseStage("concat", _config(), tiny).key
    # the base does not depend on the later stages' settings ...
    later = dataclasses.replace(config, stage1=dataclasses.replace(config.stage1, lr=1e-2), completeness_weight=0.5)
    assert BaseStage("concat", later, tiny).key == base.key
    # ... but on its own, on the seed and on the data
    assert BaseStage("concat", dataclasses.replace(config, base_topk_ratio=4.0), tiny).key != base.key
    assert BaseStage("concat", dataclasses.replace(config, seed=1), tiny).key != base.key
    other = make_synthetic_thumos(num_train=8, num_test=6, dim=16, seed=1)
    assert BaseStage("concat", config, other).key != base.key
    # DMF settings matter only to a DMF fusion
    dmf = dataclasses.replace(config, alpha=0.9)
    assert BaseStage("concat", dmf, tiny).key == base.key
    # where the mutual loss reaches matters only to mutual+, and leaves the keys of earlier runs as they were
    detached = dataclasses.replace(config, mutual_loss_through_dmf=False)
    assert BaseStage("concat+", detached, tiny).key == BaseStage("concat+", config, tiny).key
    assert BaseStage("mutual", detached, tiny).key == BaseStage("mutual", config, tiny).key
    assert BaseStage("mutual+", detached, tiny).key != BaseStage("mutual+", config, tiny).key
    empty = {v.name: None for v in tiny.train}
    rpn = RPNStage.__new__(RPNStage)  # the key needs no targets
    rpn.fusion, rpn.config, rpn.dataset, rpn.base, rpn.pseudo = "mutual+", config, tiny, base.key, empty
    moved = RPNStage.__new__(RPNStage)
    moved.fusion, moved.config, moved.dataset, moved.base, moved.pseudo = (
        "mutual+",
        dmf,
        tiny,
        base.key,
        empty,
    )
    assert rpn.key != moved.key and rpn.key.upstream == base.key
    assert rpn.name == "stage1_concat_mutual+"
    assert isinstance(hash(rpn.key), int) and len(rpn.key.fingerprint()) == 16


def test_the_runner_trains_each_stage_once_and_uses_the_configured_top_k(tiny, monkeypatch) -> None:
    calls: list[float] = []
    original = pipeline.run_base

    def spy(*args, topk_ratio, **kwargs):
        calls.append(topk_ratio)
        return original(*args, topk_ratio=topk_ratio, **kwargs)

    monkeypatch.setattr(pipeline, "run_base", spy)  # training: the pseudo labels
    monkeypatch.setattr(inference, "run_base", spy)  # detection
    runner = DetectorRunner(tiny, _config(base_topk_ratio=5.0), show_progress=False)
    first = train_and_evaluate(runner, "mutual+", "concat")
    second = train_and_evaluate(runner, "mutual+", "concat+")  # shares the base model and the T-RPN
    assert first is not None and second is not None
    kinds = sorted(key.kind for key in runner.train_stage._trained)
    assert kinds == ["base", "stage1", "stage2", "stage2"]
    # the training split once (the pseudo labels are kept), the test split once per evaluation: the
    # configured ratio every time
    assert calls == [5.0, 5.0, 5.0]
    assert set(first.proposal_quality) == {"candidates", "stage1", "rpn", "grouped", "base_detections"}
    assert first.proposal_quality["stage1"].num_videos == len(tiny.test)
    # the base's own detections, classes ignored: the recall the candidates must reach
    base_rows = {
        v.name: to_detections(
            base_detections(first.inference.base[v.name], runner.config.scoring),
            tiny.snippet_seconds,
        )
        for v in tiny.test
    }
    expected = evaluate_proposals(tiny.test, base_rows)
    assert first.proposal_quality["base_detections"].as_dict() == expected.as_dict()
    assert "Recall (%) at tIoU 0.5 / 0.7 against the average number" in first.table()
    # the Stage-1 proposals are the base model's grouped segments, all of them (the base wins every
    # overlap), and the confident T-RPN proposals that overlap none of them
    det = runner.config.proposals
    found = first.inference
    merged, own = found.stage1, found.rpn
    grouped = found.grouped
    assert set(merged) == {v.name for v in tiny.test}
    for v in tiny.test:
        rows = {tuple(r) for r in merged[v.name].segments.tolist()}
        base_rows = {tuple(r) for r in grouped[v.name].segments.tolist()}
        assert base_rows <= rows
        confident = own[v.name].segments[own[v.name].scores >= det.merge_min_objectness]
        assert rows - base_rows <= {tuple(r) for r in confident.tolist()}
        for start, end in rows - base_rows:
            if base_rows:
                g = grouped[v.name].segments
                overlap = segment_iou(torch.tensor(start), torch.tensor(end), g[:, 0], g[:, 1])
                assert overlap.max() <= det.merge_iou


def test_the_merge_can_be_switched_off_and_is_part_of_the_classifier_key(tiny) -> None:
    off = _config(proposals=ProposalSettings(merge_base_segments=False))
    runner = DetectorRunner(tiny, off, show_progress=False)
    result = train_and_evaluate(runner, "mutual+", "concat")
    assert result is not None and set(result.proposal_quality) == {
        "candidates",
        "stage1",
        "grouped",
        "base_detections",
    }
    assert result.inference.stage1 is result.inference.rpn
    rpn_key = StageKey("stage1", "mutual+", (), StageKey("base", "concat", ()))
    keys = []
    variants = (
        off,
        _config(),
        _config(proposals=ProposalSettings(merge_iou=0.5)),
        _config(proposals=ProposalSettings(merge_base_wins=False)),
        _config(proposals=ProposalSettings(merge_min_objectness=0.5)),
    )
    for config in variants:
        stage = ClassifierStage.__new__(ClassifierStage)
        stage.fusion, stage.config, stage.dataset, stage.stage1 = "concat", config, tiny, rpn_key
        keys.append(stage.key)
    assert len(set(keys)) == len(variants)


def _support_reference(segments: torch.Tensor, snippets) -> torch.Tensor:
    """The T-RPN's support by a float64 double loop: max over snippets of objectness x tIoU."""
    found = []
    for a, b in segments.double().tolist():
        best = 0.0
        for (c, d), o in zip(snippets.segments.double().tolist(), snippets.scores.double().tolist()):
            inter = max(0.0, min(b, d) - max(a, c))
            union = (b - a) + (d - c) - inter
            best = max(best, o * (inter / union if union > 0 else 0.0))
        found.append(best)
    return torch.tensor(found, dtype=torch.float64)


def test_stage2_candidates_hold_the_base_detections_and_the_stage1_proposals(tiny) -> None:
    """The candidates Stage 2 classifies at inference: every Stage-1 proposal and every segment of the
    base's detections, each once, scored by the T-RPN's support (float64 reference), so they recall at
    least what the base's detections recall; the other choices give the parts."""
    from wstal.detect import base_segments

    runner = DetectorRunner(tiny, _config(), show_progress=False)
    trained = runner.train("mutual+", "concat")
    scoring = runner.config.scoring
    found = detect(trained, tiny.test)
    results = found.base
    candidates = found.candidates
    assert set(candidates) == {v.name for v in tiny.test}
    # the base's detections are detect.base_detections'
    detections = found.rows["base"]
    assert all(detections[v.name] == base_detections(results[v.name], scoring) for v in tiny.test)
    for v in tiny.test:
        got = candidates[v.name]
        rows = [tuple(r) for r in got.segments.tolist()]
        assert len(rows) == len(set(rows))  # each segment once
        detected = {(a, b) for _, _, a, b in base_detections(results[v.name], scoring)}
        stage1 = {tuple(r) for r in found.stage1[v.name].segments.tolist()}
        assert set(rows) == detected | stage1
        expected = _support_reference(got.segments, found.snippets[v.name])
        torch.testing.assert_close(got.scores.double(), expected, atol=1e-6, rtol=1e-5)
        assert torch.all(got.scores[:-1] >= got.scores[1:])  # best first
    only = detect(
        trained,
        tiny.test,
        scoring=dataclasses.replace(scoring, candidates="stage1", objectness="own"),
        reuse=found,
    ).candidates
    alone = detect(
        trained,
        tiny.test,
        scoring=dataclasses.replace(scoring, candidates="base", objectness="own"),
        reuse=found,
    ).candidates
    for v in tiny.test:
        stage1 = found.stage1[v.name]
        assert {tuple(r) for r in only[v.name].segments.tolist()} == {
            tuple(r) for r in stage1.segments.tolist()
        }
        assert sorted(only[v.name].scores.tolist()) == pytest.approx(
            sorted(stage1.scores.clamp(0, 1).tolist())
        )
        own = base_segments(
            results[v.name], base_detections(results[v.name], scoring), scoring.grouping.outer_ratio
        )
        assert alone[v.name].segments.tolist() == own.segments.tolist()
    # a superset of the base's detected segments recalls at least as much at every tIoU
    rows = {
        v.name: to_detections(
            [(0, 1.0, a, b) for a, b in candidates[v.name].segments.tolist()], tiny.snippet_seconds
        )
        for v in tiny.test
    }
    base_rows = {
        v.name: to_detections(base_detections(results[v.name], scoring), tiny.snippet_seconds)
        for v in tiny.test
    }
    budget = (max(len(r) for r in rows.values()),)
    mine, theirs = (evaluate_proposals(tiny.test, r, max_proposals=budget) for r in (rows, base_rows))
    assert (mine.recall >= theirs.recall - 1e-12).all()


def test_rpn_support_against_a_float64_loop() -> None:
    from wstal.detect import rpn_support
    from wstal.pseudo_labels import Segments

    g = torch.Generator().manual_seed(0)
    starts = torch.rand(30, generator=g) * 50
    snippets = Segments(
        torch.stack([starts, starts + torch.rand(30, generator=g) * 10], -1), torch.rand(30, generator=g)
    )
    a = torch.rand(12, generator=g) * 50
    segments = torch.stack([a, a + torch.rand(12, generator=g) * 12], -1)
    torch.testing.assert_close(
        rpn_support(segments, snippets).double(), _support_reference(segments, snippets), atol=1e-6, rtol=1e-5
    )
    assert rpn_support(torch.zeros(0, 2), snippets).shape == (0,)
    assert rpn_support(segments, Segments(torch.zeros(0, 2), torch.zeros(0))).tolist() == [0.0] * 12


def test_merge_proposals_by_hand() -> None:
    from wstal.detect import merge_proposals
    from wstal.pseudo_labels import Segments

    rpn = Segments(torch.tensor([[0.0, 10.0], [30.0, 34.0]]), torch.tensor([0.9, 0.2]))
    base = Segments(torch.tensor([[1.0, 10.0], [20.0, 22.0], [30.0, 33.0]]), torch.tensor([0.5, 1.4, 0.6]))
    merged = merge_proposals(rpn, base, 0.6)
    # [1, 10] overlaps [0, 10] by 0.9 and scores lower: suppressed; [30, 33] overlaps [30, 34] by 0.75 and
    # scores higher: it replaces it; [20, 22] is new; the base's contrast 1.4 is clipped to 1
    assert merged.segments.tolist() == [[20.0, 22.0], [0.0, 10.0], [30.0, 33.0]]
    assert merged.scores.tolist() == pytest.approx([1.0, 0.9, 0.6])
    assert merge_proposals(rpn, base, 1.0).segments.shape == (5, 2)  # nothing overlaps by more than 1
    empty = Segments(torch.zeros(0, 2), torch.zeros(0))
    assert merge_proposals(empty, empty, 0.6).segments.shape == (0, 2)
    only = merge_proposals(empty, base, 0.6)
    assert only.segments.tolist() == [[20.0, 22.0], [30.0, 33.0], [1.0, 10.0]]


def test_merge_proposals_base_wins_by_hand() -> None:
    from wstal.detect import merge_proposals
    from wstal.pseudo_labels import Segments

    rpn = Segments(
        torch.tensor([[0.0, 10.0], [30.0, 34.0], [50.0, 60.0], [70.0, 80.0]]),
        torch.tensor([0.995, 0.2, 0.999, 0.9]),
    )
    base = Segments(torch.tensor([[1.0, 10.0], [20.0, 22.0], [30.0, 33.0]]), torch.tensor([0.5, 1.4, 0.6]))
    merged = merge_proposals(rpn, base, 0.3, extra_wins=True, min_score=0.99)
    # [0, 10] overlaps the base's [1, 10] by 0.9 and scores higher, yet the base's segment is kept;
    # [30, 34] and [70, 80] score below 0.99 and are left out; [50, 60] is new; ranked by score
    assert merged.segments.tolist() == [[20.0, 22.0], [50.0, 60.0], [30.0, 33.0], [1.0, 10.0]]
    assert merged.scores.tolist() == pytest.approx([1.0, 0.999, 0.6, 0.5])
    # without the floor, [70, 80] joins; [30, 34] still loses to the base's [30, 33]
    loose = merge_proposals(rpn, base, 0.3, extra_wins=True)
    assert [70.0, 80.0] in loose.segments.tolist() and [30.0, 34.0] not in loose.segments.tolist()
    # the base's own segments suppress each other too when they overlap by more than the threshold
    crowded = Segments(torch.tensor([[0.0, 10.0], [2.0, 10.0]]), torch.tensor([0.4, 0.8]))
    assert merge_proposals(rpn, crowded, 0.6, extra_wins=True, min_score=1.0).segments.tolist() == [
        [2.0, 10.0]
    ]


def test_classifier_key_extends_the_rpn_key(tiny) -> None:
    config = _config()
    rpn_key = StageKey("stage1", "mutual+", (), StageKey("base", "concat", ()))
    stage = ClassifierStage.__new__(ClassifierStage)
    stage.fusion, stage.config, stage.dataset, stage.stage1 = "concat", config, tiny, rpn_key
    assert stage.key.upstream == rpn_key and stage.name == "stage2_concat_mutual+_concat"
    changed = ClassifierStage.__new__(ClassifierStage)
    changed.fusion, changed.config, changed.dataset, changed.stage1 = (
        "concat",
        _config(completeness_weight=0.0),
        tiny,
        rpn_key,
    )
    assert changed.key != stage.key


def test_machine_defaults(monkeypatch) -> None:
    parser = launch.build_parser("test", "")
    args = parser.parse_args([])
    assert args.threads is None  # chosen by launch.default_threads when the run starts
    assert args.device == "auto" and args.amp == "auto"
    assert launch.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert launch.resolve_device("cpu") == "cpu"
    assert resolve_amp("auto", "cpu") == ("bf16" if native_bf16("cpu") else "off")
    assert resolve_amp("fp16", "cpu") == "fp16"
    with pytest.raises(ValueError, match="amp must be one of"):
        resolve_amp("bf32", "cpu")
    monkeypatch.setattr(launch.os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert launch.available_cores() == 3


@pytest.mark.parametrize(
    ("busy", "expected"),
    [(0.0, 3), (0.4, 3), (0.6, 2), (1.2, 2), (1.6, 1), (2.9, 1), (40.0, 1)],
)
def test_default_threads_leave_the_busy_cores_to_other_jobs(monkeypatch, busy, expected) -> None:
    """Three usable cores less those other jobs keep busy (rounded), never below one thread."""
    monkeypatch.setattr(launch.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr(launch, "busy_cpus", lambda: busy)
    assert launch.default_threads() == expected


def test_busy_cpus_reads_the_runnable_threads_other_than_this_one(monkeypatch, tmp_path: Path) -> None:
    """The mean of ``procs_running`` less this process over the samples; without /proc/stat the load
    average; without either, nothing is busy."""
    import builtins

    real_open = builtins.open
    counts = iter([3, 4, 2, 3])

    def fake_open(path, *args, **kwargs):
        if path == "/proc/stat":
            text = tmp_path / "stat"
            text.write_text(f"cpu  1 2 3\nprocs_running {next(counts)}\nprocs_blocked 0\n")
            return real_open(text, *args, **kwargs)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    assert launch.busy_cpus(samples=4, interval=0.0) == pytest.approx((2 + 3 + 1 + 2) / 4)

    def no_stat(path, *args, **kwargs):
        if path == "/proc/stat":
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_stat)
    monkeypatch.setattr(launch.os, "getloadavg", lambda: (1.25, 0.0, 0.0))
    assert launch.busy_cpus() == 1.25
    monkeypatch.delattr(launch.os, "getloadavg")
    assert launch.busy_cpus() == 0.0


def test_parse_sets_the_default_threads_and_quick_run(monkeypatch) -> None:
    """``parse`` takes :func:`launch.default_threads` unless ``--threads`` says; ``--quick`` is the quick
    preset with at most QUICK_MAX_VIDEOS videos per split, and refuses another preset."""
    monkeypatch.setattr(launch, "busy_cpus", lambda: 64.0)  # every core busy: one thread
    monkeypatch.setattr(launch, "init_distributed", lambda device, timeout_minutes: None)
    before = torch.get_num_threads()
    try:
        args = launch.parse(launch.build_parser("test", ""), ["--quick"])
        assert args.threads == 1 == torch.get_num_threads()
        assert launch.preset_name(args) == "quick" and args.max_videos == launch.QUICK_MAX_VIDEOS
        args = launch.parse(
            launch.build_parser("test", ""), ["--quick", "--max-videos", "7", "--threads", "2"]
        )
        assert args.threads == 2 and args.max_videos == 7
        with pytest.raises(SystemExit):
            launch.parse(launch.build_parser("test", ""), ["--quick", "--preset", "default"])
    finally:
        torch.set_num_threads(before)


def test_native_bf16_reads_the_cpu_flags(tmp_path: Path, monkeypatch) -> None:
    import builtins

    real_open = builtins.open
    for flags, expected in (
        ("fpu avx2 avx512f", False),
        ("fpu avx512f avx512_bf16", True),
        ("amx_bf16 sse", True),
    ):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(
            builtins,
            "open",
            lambda path, *a, _i=info, **k: real_open(_i if path == "/proc/cpuinfo" else path, *a, **k),
        )
        assert native_bf16("cpu") is expected
        monkeypatch.setattr(builtins, "open", real_open)
    assert native_bf16("meta") is False


def test_two_stage_scores_fuse_the_base_evidence_as_a_weighted_geometric_mean() -> None:
    from wstal.detect import BaseResult, base_contrast, detections_from_proposals
    from wstal.pseudo_labels import Segments

    t = 20
    attention = torch.zeros(t)
    attention[5:10] = 1.0
    p = torch.full((t, 3), 0.1)
    p[5:10, 0] = 0.9  # class 0 inside [5, 10), classes: 0, 1 and background
    base = BaseResult(p, attention, attention, torch.tensor([0.8, 0.2]))
    proposals = Segments(torch.tensor([[5.0, 10.0], [12.0, 16.0]]), torch.tensor([0.9, 0.5]))
    probs, video = torch.tensor([[0.6, 0.1], [0.3, 0.2]]), torch.tensor([0.5, 0.5])
    plain = ScoringSettings(base_weight=0.0, class_threshold=0.0, soft_nms_sigma=1e-6)

    def scores(rows):  # (class, start) -> score; the two proposals do not overlap, soft-NMS keeps them
        return {(c, round(a)): s for c, s, a, b in rows}

    alone = scores(detections_from_proposals(proposals, probs, video, plain, base))
    assert alone == scores(detections_from_proposals(proposals, probs, video, plain))
    assert alone[(0, 5)] == pytest.approx(0.9 * 0.6 * 0.5)
    w = 0.4
    fused = scores(
        detections_from_proposals(proposals, probs, video, dataclasses.replace(plain, base_weight=w), base)
    )
    v = video ** (1 - w) * base.video_scores**w
    v = v / v.sum()
    contrast = base_contrast(base, 0, proposals.segments, plain.grouping.outer_ratio)
    assert contrast[0] == pytest.approx(1.0) and contrast[1] == 0.0  # a clean block; background
    assert fused[(0, 5)] == pytest.approx(0.9 * 0.6 ** (1 - w) * 1.0**w * float(v[0]))
    assert fused.get((0, 12), 0.0) < 1e-3 < alone[(0, 12)]  # no base evidence on background: pushed down
    full = scores(
        detections_from_proposals(proposals, probs, video, dataclasses.replace(plain, base_weight=1.0), base)
    )
    assert full[(0, 5)] == pytest.approx(0.9 * 1.0 * 0.8)  # the base's class score and video score alone


def test_length_bucketed_batches_cover_the_epoch_and_waste_less_padding() -> None:
    from wstal.train import batch_indices

    lengths = torch.randint(5, 2000, (203,), generator=torch.Generator().manual_seed(3)).tolist()

    def epoch(seed: int, bucketed: bool) -> list[list[int]]:
        g = torch.Generator().manual_seed(seed)
        return list(batch_indices(len(lengths), 8, g, lengths=lengths if bucketed else None))

    def efficiency(batches: list[list[int]]) -> float:  # valid snippets / padded snippets
        return sum(sum(lengths[i] for i in b) for b in batches) / sum(
            max(lengths[i] for i in b) * len(b) for b in batches
        )

    plain, bucketed = epoch(0, False), epoch(0, True)
    assert plain == [
        torch.randperm(203, generator=torch.Generator().manual_seed(0))[i : i + 8].tolist()
        for i in range(0, 203, 8)
    ]
    assert sorted(i for b in bucketed for i in b) == list(range(203))
    assert (
        max(len(b) for b in bucketed) == 8 and len(bucketed) <= len(plain) + 7
    )  # at most one short batch per pool
    assert bucketed == epoch(0, True) and bucketed != epoch(1, True)  # deterministic, and random per epoch
    assert efficiency(bucketed) > 0.75 > 0.65 > efficiency(plain)


# ------------------------------------------------------------------------------ one method, presets


def _fields(config: object, prefix: str = "") -> dict[str, object]:
    """Every leaf field of a (nested) configuration dataclass, by dotted name."""
    leaves: dict[str, object] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            leaves |= _fields(value, f"{prefix}{f.name}.")
        else:
            leaves[prefix + f.name] = value
    return leaves


def test_presets_agree_on_every_method_field() -> None:
    configs = {name: _fields(preset_config(name)) for name in PRESETS}
    reference = configs["default"]
    capacity = {name for name in reference if name.split(".")[0] in CAPACITY_FIELDS}
    assert capacity >= {"embed_dim", "base.epochs", "stage1.max_len", "stage2.dropout"}
    for name, fields in configs.items():
        assert fields.keys() == reference.keys()
        differ = {k for k in fields if fields[k] != reference[k]}
        assert differ <= capacity, f"preset {name!r} changes method fields {sorted(differ - capacity)}"
    assert preset_config("default") == DetectorConfig()
    assert _fields(preset_config("thumos14"))["embed_dim"] == 1024  # the presets do differ in capacity


def test_a_preset_that_sets_a_method_field_is_refused(monkeypatch) -> None:
    monkeypatch.setitem(PRESETS, "odd", {"scoring": ScoringSettings(base_weight=0.7)})
    with pytest.raises(ValueError, match=r"preset 'odd' sets \['scoring'\]: a preset sets only"):
        preset_config("odd")


def test_the_preset_flag_is_independent_of_the_data(tmp_path: Path) -> None:
    parser = launch.build_parser("test", "")
    builtin = parser.parse_args([])
    assert launch.preset_name(builtin) == "default"
    assert launch.make_config(builtin) == DetectorConfig()
    folder = parser.parse_args(["--data-dir", str(tmp_path)])
    assert launch.preset_name(folder) == "thumos14"
    assert launch.make_config(folder) == preset_config("thumos14")
    crossed = parser.parse_args(["--preset", "thumos14", "--epochs", "3"])
    config = launch.make_config(crossed)
    assert config.embed_dim == 1024 and config.stage1.max_len == 750 and config.base.epochs == 3
    assert (
        launch.preset_name(parser.parse_args(["--data-dir", str(tmp_path), "--preset", "default"]))
        == "default"
    )


# ------------------------------------------------------------------------------ keys that cannot go stale


def _another(value: object) -> object:
    """A different valid value of a configuration leaf."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value > 0 else 0.5
    if isinstance(value, tuple):
        return value[:-1]
    others = {
        "boundary": "attention",  # PseudoLabelSettings.source
        "attention": "boundary",
        "stage1+base": "stage1",  # ScoringSettings.candidates
        "rpn": "own",  # ScoringSettings.objectness
    }
    if value in others:
        return others[value]
    raise AssertionError(f"no other value for {value!r}")


def _classifier_key(tiny: object, config: DetectorConfig) -> StageKey:
    stage = ClassifierStage.__new__(ClassifierStage)  # the key needs no proposals
    stage.fusion, stage.config, stage.dataset = "concat", config, tiny
    stage.stage1 = StageKey("stage1", "mutual+", (), StageKey("base", "concat", ()))
    return stage.key


@pytest.mark.parametrize("part", ["proposals", "scoring", "pseudo"])
def test_every_proposal_setting_is_in_the_stage2_key_and_no_scoring_setting_is(tiny, part: str) -> None:
    config = _config()
    settings = getattr(config, part)
    leaves = _fields(settings)
    assert leaves
    for name, value in leaves.items():
        head, _, leaf = name.rpartition(".")
        if head:  # a nested settings object, e.g. scoring.grouping.nms_iou
            inner = getattr(settings, head)
            changed = dataclasses.replace(
                settings, **{head: dataclasses.replace(inner, **{leaf: _another(value)})}
            )
        else:
            changed = dataclasses.replace(settings, **{name: _another(value)})
        other = dataclasses.replace(config, **{part: changed})
        if part == "proposals":  # shapes Stage 2's training proposals
            assert _classifier_key(tiny, other) != _classifier_key(tiny, config), name
        elif part == "scoring":  # inference only: the trained Stage 2 is the same
            assert _classifier_key(tiny, other) == _classifier_key(tiny, config), name
        else:  # the pseudo segments: the T-RPN's key, and so every key downstream of it
            empty = {v.name: None for v in tiny.train}
            keys = []
            for c in (config, other):
                rpn = RPNStage.__new__(RPNStage)
                rpn.fusion, rpn.config, rpn.dataset, rpn.pseudo = "mutual+", c, tiny, empty
                rpn.base = BaseStage("concat", c, tiny).key
                keys.append(rpn.key)
            assert keys[0] != keys[1], name


# ------------------------------------------------------------------------------ training only


def test_the_runner_reads_only_the_training_split(tiny) -> None:
    """The pseudo labels and the training proposals cover the training videos, each kept under its
    stage's key; the test split's videos are never run by the runner."""
    runner = DetectorRunner(tiny, _config(), show_progress=False)
    labels = runner.pseudo_labels("concat")
    assert set(labels.results) == set(labels.segments) == {v.name for v in tiny.train}
    assert runner.pseudo_labels("concat") is labels  # kept, under the stage's key
    proposals = runner.training_proposals("mutual+", "concat")
    assert set(proposals.stage1) == {v.name for v in tiny.train}
    assert proposals.key.upstream == labels.key
    public = {name for name in dir(runner) if not name.startswith("_")}
    assert not public & {"base_outputs", "proposals", "candidates", "base_detections", "videos"}


# ------------------------------------------------------------------------------ --set and class segments


def test_set_overrides_any_field_by_its_dotted_name() -> None:
    from wstal.config import override

    config = override(DetectorConfig(), "proposals.class_segments", "true")
    assert config.proposals.class_segments is True and config.proposals.merge_iou == 0.3
    assert override(config, "scoring.grouping.thresholds", "0.2, 0.5").scoring.grouping.thresholds == (
        0.2,
        0.5,
    )
    assert override(config, "stage1.epochs", "3").stage1.epochs == 3
    assert override(config, "completeness_source", "mean").completeness_source == "mean"
    for name, text, message in (
        ("proposals.nope", "1", "ProposalSettings has no field 'nope'; fields: nms_iou"),
        ("proposals", "1", "'proposals' is a group of settings"),
        ("stage1.epochs", "three", "StageSettings.epochs takes a int, got 'three'"),
        ("proposals.merge_base_wins", "yes", "ProposalSettings.merge_base_wins takes a bool"),
        ("completeness_source", "middle", "DetectorConfig.completeness_source must be one of"),
    ):
        with pytest.raises(ValueError, match=message):
            override(config, name, text)
    parser = launch.build_parser("test", "")
    args = launch.parse(parser, ["--set", "proposals.merge_iou=0.5", "--set", "seed=4", "--seed", "1"])
    assert launch.make_config(args).proposals.merge_iou == 0.5 and launch.make_config(args).seed == 4
    for bad in ("proposals.merge_iou", "proposals.merge_iou=2"):
        with pytest.raises(SystemExit) as exit_info:
            launch.parse(parser, ["--set", bad])
        assert exit_info.value.code == 2


def test_class_segments_by_hand() -> None:
    from wstal.detect import BaseResult, class_segments, stage1_proposals
    from wstal.pseudo_labels import Segments

    t = 20
    attention = torch.zeros(t)
    attention[2:6] = 1.0
    attention[10:14] = 1.0
    p = torch.full((t, 3), 0.05)
    p[2:6, 0] = 0.9  # class 0 in [2, 6), class 1 in [10, 14); the video scores name only class 0
    p[10:14, 1] = 0.9
    base = BaseResult(p, attention, attention, torch.tensor([0.9, 0.05]))
    settings = ProposalSettings(
        class_segments=True, class_grouping=GroupingSettings(thresholds=(0.5,), nms_iou=0.7)
    )
    found = class_segments(base, settings)
    assert found.segments.tolist() == [[2.0, 6.0]]  # class 1's video score is below class_threshold 0.1
    both = class_segments(base, dataclasses.replace(settings, class_threshold=0.01))
    assert sorted(both.segments.tolist()) == [[2.0, 6.0], [10.0, 14.0]]
    # added to the merged set only where they repeat nothing kept (tIoU above class_segments_iou)
    rpn = Segments(torch.tensor([[2.0, 6.0]]), torch.tensor([0.995]))
    grouped = Segments(torch.zeros(0, 2), torch.zeros(0))
    merged = stage1_proposals(rpn, grouped, dataclasses.replace(settings, class_threshold=0.01), base)
    assert sorted(merged.segments.tolist()) == [[2.0, 6.0], [10.0, 14.0]]
    assert stage1_proposals(rpn, grouped, ProposalSettings(), base).segments.tolist() == [[2.0, 6.0]]
    with pytest.raises(ValueError, match="class_segments needs the base model's result"):
        stage1_proposals(rpn, grouped, settings)
