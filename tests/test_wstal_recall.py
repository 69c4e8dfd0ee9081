"""Tests of the proposal-quality metrics (AR@AN): hand-worked cases, a float64 loop reference, properties.

Hand-worked cases show their arithmetic in comments: recall = recalled ground truth / ground truth, a ground
truth recalled at tIoU θ when one of its video's top-N proposals reaches tIoU >= θ; AR = mean recall over
θ in 0.5:0.05:0.95 (ten thresholds).
"""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import wstal.recall
from wstal.data import Video
from wstal.evaluation import Detection
from wstal.recall import (
    AR_TIOU_THRESHOLDS,
    ProposalResult,
    evaluate_proposals,
    format_proposal_table,
    proposals_from_segments,
    recall_at_equal_budget,
)

THETAS = np.arange(0.5, 0.951, 0.05)  # the brief's spelling: 0.7 here is 0.7000000000000001


def video(name: str, segments, classes=None, duration: float = 100.0) -> Video:
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    classes = np.zeros(len(segments), np.int64) if classes is None else np.asarray(classes)
    return Video(name, np.zeros((2, 1)), np.zeros((2, 1)), np.ones(2), segments, classes, duration)


def props(*rows: tuple[float, float, float]) -> list[Detection]:
    return [Detection(0, score, start, end) for score, start, end in rows]


# --------------------------------------------------------------------------------------------------------------
# hand-worked cases


@pytest.fixture
def two_videos():
    # a: GT A1 [0, 10], A2 [20, 30]; b: GT B1 [0, 4]
    # a's proposals by score: [0, 5] (tIoU 5/10 = 0.5 with A1), [20, 27] (7/10 = 0.7 with A2), [0, 10] (1 with A1)
    # b's proposal: [1, 4] (3/4 = 0.75 with B1)
    videos = [video("a", [[0, 10], [20, 30]]), video("b", [[0, 4]])]
    proposals = {"a": props((0.9, 0, 5), (0.8, 20, 27), (0.7, 0, 10)), "b": props((0.5, 1, 4))}
    return videos, proposals


def test_hand_worked_recall_and_average_recall(two_videos):
    result = evaluate_proposals(*two_videos, max_proposals=(1, 2, 3), tiou_thresholds=THETAS)
    # thresholds reached, out of ten (0.5, 0.55, ..., 0.95):
    #   N=1: A1 by [0, 5]: 1 (0.5 only, equal counts); A2: 0; B1 by [1, 4]: 6 (0.5 ... 0.75) -> 7 / 30
    #   N=2: A1 1, A2 by [20, 27]: 5 (0.5 ... 0.7), B1 6 -> 12 / 30
    #   N=3: A1 by [0, 10]: 10, A2 5, B1 6 -> 21 / 30
    np.testing.assert_allclose(result.average_recall, [7 / 30, 12 / 30, 21 / 30])
    # R@0.5: N=1 A1, B1 -> 2/3; then all. R@0.7: N=1 B1 -> 1/3; N=2 A2, B1 -> 2/3; N=3 all
    np.testing.assert_allclose(result.recall, [[2 / 3, 1, 1], [1 / 3, 2 / 3, 1]])
    # kept per video: N=1 (1 + 1) / 2; N=2 (2 + 1) / 2; N=3 (3 + 1) / 2
    np.testing.assert_allclose(result.kept_per_video, [1.0, 1.5, 2.0])
    assert result.proposals_per_video == 2.0
    assert (result.num_ground_truth, result.num_videos) == (3, 2)
    # the curve runs over every cut up to the longest list (3) and agrees with the budgets
    assert result.curve_cut.tolist() == [1, 2, 3]
    np.testing.assert_allclose(result.curve_average_recall, result.average_recall)
    np.testing.assert_allclose(result.curve_recall, result.recall)
    np.testing.assert_allclose(result.curve_kept, result.kept_per_video)


def test_budget_beyond_the_lists_uses_all_and_says_so(two_videos):
    # 3 and 1 proposals: AR@100 is the recall of all of them, and the actual average is 2, not 100
    result = evaluate_proposals(*two_videos, max_proposals=(3, 100))
    assert result.average_recall[1] == result.average_recall[0] == pytest.approx(21 / 30)
    np.testing.assert_allclose(result.kept_per_video, [2.0, 2.0])
    assert result.curve_cut.tolist() == [1, 2, 3]


def test_tiou_just_below_the_threshold_does_not_count():
    # [0, 4.999] vs [0, 10]: 0.4999 < 0.5; [0, 5]: exactly 0.5 counts
    v = [video("v", [[0, 10]])]
    assert evaluate_proposals(v, {"v": props((1.0, 0, 4.999))}, max_proposals=(1,)).recall[0, 0] == 0.0
    assert evaluate_proposals(v, {"v": props((1.0, 0, 5))}, max_proposals=(1,)).recall[0, 0] == 1.0


def test_cut_by_score_and_ties_in_list_order():
    v = [video("v", [[0, 10]])]
    hit, miss = (0.5, 0, 10), (0.5, 50, 60)
    # equal scores: the cut at 1 keeps the proposal listed first
    assert evaluate_proposals(v, {"v": props(miss, hit)}, max_proposals=(1,)).recall[0, 0] == 0.0
    assert evaluate_proposals(v, {"v": props(hit, miss)}, max_proposals=(1,)).recall[0, 0] == 1.0
    # a higher score ranks first wherever it is listed
    assert evaluate_proposals(v, {"v": props(miss, (0.6, 0, 10))}, max_proposals=(1,)).recall[0, 0] == 1.0


def test_identical_ground_truth_counts_once():
    # THUMOS lists [0, 10] as CliffDiving (class 1) and again as Diving (class 0): one instance;
    # [0, 10.5] differs, so it is a second one ([0, 10] vs [0, 10.5]: 10 / 10.5 = 0.952 >= 0.95)
    v = [video("v", [[0, 10], [30, 40], [0, 10], [0, 10.5]], classes=[1, 0, 0, 0])]
    result = evaluate_proposals(v, {"v": props((1.0, 0, 10))}, max_proposals=(1,))
    assert result.num_ground_truth == 3
    np.testing.assert_allclose(result.recall[:, 0], [2 / 3, 2 / 3])
    assert result.average_recall[0] == pytest.approx(2 / 3)


def test_no_proposals():
    result = evaluate_proposals([video("a", [[0, 10]]), video("b", [[5, 6]])], {"a": []})
    np.testing.assert_array_equal(result.average_recall, 0.0)
    np.testing.assert_array_equal(result.recall, 0.0)
    np.testing.assert_array_equal(result.kept_per_video, 0.0)
    assert result.proposals_per_video == 0.0
    assert result.curve_cut.tolist() == [1]
    assert result.recall_at_budget(0.0) == 0.0


def test_video_without_ground_truth_counts_in_the_average_only():
    # a: GT [0, 10], 2 proposals; b: no GT, 4 proposals -> 3 per video on average, recall from a alone
    videos = [video("a", [[0, 10]]), video("b", [])]
    proposals = {"a": props((0.9, 50, 60), (0.8, 0, 10)), "b": props(*[(1.0, 0, 10)] * 4)}
    result = evaluate_proposals(videos, proposals, max_proposals=(1, 2, 4))
    assert result.proposals_per_video == 3.0
    np.testing.assert_allclose(result.kept_per_video, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(result.recall[0], [0.0, 1.0, 1.0])
    assert result.num_ground_truth == 1


def test_no_ground_truth_at_all_gives_nan():
    result = evaluate_proposals([video("v", [])], {"v": props((1.0, 0, 1))})
    assert np.isnan(result.average_recall).all() and np.isnan(result.recall).all()
    assert np.isnan(result.recall_at_budget(1.0))
    assert result.as_dict()["average_recall"] == [None, None, None]
    assert "n/a" in result.table()


def test_snippet_units_round_the_ground_truth():
    # GT [1, 3] s with 0.64 s snippets -> round(1.5625), round(4.6875) = [2, 5]; the proposal [1.28, 3.2] s
    # is [2, 5] snippets (tIoU 1), but in seconds tIoU = 1.72 / 2.2 = 0.78 < 0.8
    v, p = [video("v", [[1, 3]])], {"v": props((1.0, 1.28, 3.2))}
    seconds = evaluate_proposals(v, p, max_proposals=(1,), recall_tiou=(0.75, 0.8))
    snippets = evaluate_proposals(v, p, max_proposals=(1,), recall_tiou=(0.75, 0.8), snippet_units=True)
    assert seconds.recall[:, 0].tolist() == [1.0, 0.0]
    assert snippets.recall[:, 0].tolist() == [1.0, 1.0]


def test_ambiguous_proposals_are_dropped_before_the_cut():
    # the best proposal overlaps the ambiguous region [60, 70]: dropped, so the cut at 1 keeps the hit
    v = [video("v", [[0, 10]])]
    p = {"v": props((0.9, 55, 65), (0.5, 0, 10))}
    plain = evaluate_proposals(v, p, max_proposals=(1,))
    filtered = evaluate_proposals(v, p, max_proposals=(1,), ambiguous={"v": np.array([[60.0, 70.0]])})
    assert plain.recall[0, 0] == 0.0 and plain.proposals_per_video == 2.0
    assert filtered.recall[0, 0] == 1.0 and filtered.proposals_per_video == 1.0


def test_labels_are_ignored(two_videos):
    videos, proposals = two_videos
    relabelled = {name: [d._replace(label=7) for d in dets] for name, dets in proposals.items()}
    a, b = (evaluate_proposals(videos, p) for p in (proposals, relabelled))
    np.testing.assert_array_equal(a.average_recall, b.average_recall)


# --------------------------------------------------------------------------------------------------------------
# equal budget and the table


def test_recall_at_budget_interpolates_between_cuts(two_videos):
    result = evaluate_proposals(*two_videos)
    # R@0.5 at cuts 1, 2, 3 = 2/3, 1, 1 with 1.0, 1.5, 2.0 kept per video; from (0, 0)
    assert result.recall_at_budget(1.0) == pytest.approx(2 / 3)
    assert result.recall_at_budget(1.25) == pytest.approx(2 / 3 + 0.5 * (1 / 3))
    assert result.recall_at_budget(0.5) == pytest.approx(1 / 3)
    assert result.recall_at_budget(1.25, tiou=0.7) == pytest.approx(1 / 3 + 0.5 * (1 / 3))
    assert result.recall_at_budget(50.0) == 1.0  # all it has


def test_recall_at_equal_budget_cuts_to_the_smallest_average(two_videos):
    videos, many = two_videos
    # one proposal per video: a's [0, 10] recalls A1, b's [40, 50] nothing -> R@0.5 = 1/3 with 1.0 per video
    few = {"a": props((0.1, 0, 10)), "b": props((0.1, 40, 50))}
    rows = {"stage1": evaluate_proposals(videos, few), "base": evaluate_proposals(videos, many)}
    equal = recall_at_equal_budget(rows)
    assert equal.budget == 1.0 and equal.tiou == 0.5
    # base cut to 1 per video: its R@0.5 at cut 1 is 2/3, not its 1.0 with all 2 per video
    assert equal.recall == pytest.approx({"stage1": 1 / 3, "base": 2 / 3})
    table = format_proposal_table(rows)
    assert table.splitlines() == [
        "| proposals | AN/video | AR@10 | AR@50 | AR@100 | R@0.5 @100 | R@0.7 @100 | R@0.5 @1.0 (equal) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        "| stage1 | 1.0 | 33.3 | 33.3 | 33.3 | 33.3 | 33.3 | 33.3 |",
        "| base | 2.0 | 70.0 | 70.0 | 70.0 | 100.0 | 100.0 | 66.7 |",
    ]
    # one set alone has no equal-budget column
    assert "equal" not in rows["base"].table("base")
    # budget_from: the budget of the named sets only; every set is still cut to it
    pair = recall_at_equal_budget({"few": rows["stage1"], "base": rows["base"]}, budget_from=["base"])
    assert pair.budget == 2.0 and pair.recall == pytest.approx({"few": 1 / 3, "base": 1.0})
    assert format_proposal_table(rows, budget_from=["base"]).splitlines()[0].endswith("R@0.5 @2.0 (equal) |")
    with pytest.raises(ValueError, match="budget_from must name rows among"):
        recall_at_equal_budget(rows, budget_from=["rpn"])


def test_as_dict_is_json_and_complete(two_videos):
    result = evaluate_proposals(*two_videos, max_proposals=(1, 2, 3))
    data = json.loads(json.dumps(result.as_dict()))
    assert data["max_proposals"] == [1, 2, 3]
    assert data["average_recall"] == pytest.approx([7 / 30, 12 / 30, 21 / 30])
    assert data["recall"][1] == pytest.approx([1 / 3, 2 / 3, 1])
    assert data["kept_per_video"] == [1.0, 1.5, 2.0] and data["proposals_per_video"] == 2.0
    assert data["curve"]["cut"] == [1, 2, 3] and data["curve"]["kept_per_video"] == [1.0, 1.5, 2.0]
    assert data["tiou_thresholds"] == pytest.approx(list(AR_TIOU_THRESHOLDS))
    assert (data["num_ground_truth"], data["num_videos"]) == (3, 2)


def test_proposals_from_segments():
    torch = pytest.importorskip("torch")
    from wstal.pseudo_labels import Segments

    segments = {"v": Segments(torch.tensor([[2.0, 5.0], [0.0, 1.0]]), torch.tensor([0.5, 0.25]))}
    assert proposals_from_segments(segments, snippet_seconds=0.64) == {
        "v": [Detection(0, 0.5, 1.28, 3.2), Detection(0, 0.25, 0.0, 0.64)]
    }


# --------------------------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_proposals": ()}, "max_proposals"),
        ({"max_proposals": (0, 10)}, "max_proposals"),
        ({"max_proposals": (2.5,)}, "max_proposals"),
        ({"max_proposals": (True,)}, "max_proposals"),
        ({"max_proposals": 10}, "max_proposals"),
        ({"tiou_thresholds": (0.5, 1.5)}, "tiou_thresholds"),
        ({"tiou_thresholds": ()}, "tiou_thresholds"),
        ({"recall_tiou": (0.0,)}, "recall_tiou"),
        ({"snippet_units": True, "snippet_seconds": 0.0}, "snippet_seconds"),
    ],
)
def test_bad_options(two_videos, options, message):
    with pytest.raises(ValueError, match=message):
        evaluate_proposals(*two_videos, **options)


@pytest.mark.parametrize(
    ("videos", "proposals", "error", "message"),
    [
        ([], {}, ValueError, "videos must not be empty"),
        ([video("v", []), video("v", [])], {}, ValueError, "unique names"),
        ([video("v", [])], {"w": []}, ValueError, "not among the evaluated videos"),
        ([video("v", [])], {"v": props((float("nan"), 0, 1))}, ValueError, "finite"),
        ([video("v", [])], {"v": props((1.0, 2, 1))}, ValueError, "end >= start"),
        ([video("v", [])], {"v": [(1.0, 0, 1)]}, TypeError, "label, score, start, end"),
    ],
)
def test_bad_inputs(videos, proposals, error, message):
    with pytest.raises(error, match=message):
        evaluate_proposals(videos, proposals)


def test_bad_budget_and_rows(two_videos):
    result = evaluate_proposals(*two_videos)
    with pytest.raises(ValueError, match="budget"):
        result.recall_at_budget(-1.0)
    with pytest.raises(ValueError, match=r"tiou must be one of recall_tiou \[0.5, 0.7\], got 0.6"):
        result.recall_at_budget(1.0, tiou=0.6)
    with pytest.raises(ValueError, match="rows"):
        format_proposal_table({})
    other = evaluate_proposals([two_videos[0][0]], {})
    with pytest.raises(ValueError, match="same videos"):
        recall_at_equal_budget({"a": result, "b": other})
    with pytest.raises(ValueError, match="share max_proposals"):
        format_proposal_table({"a": result, "b": evaluate_proposals(*two_videos, max_proposals=(5,))})
    with pytest.raises(TypeError, match=r"rows\['b'\] must be a ProposalResult"):
        format_proposal_table({"a": result, "b": result.as_dict()})


# --------------------------------------------------------------------------------------------------------------
# a plain reference and properties


def reference(videos, proposals, budgets, thresholds):
    """The obvious loops in float64: (recall (r, a), kept per video (a,), proposals per video)."""

    def tiou(p, g):
        inter = max(0.0, min(p[1], g[1]) - max(p[0], g[0]))
        union = (p[1] - p[0]) + (g[1] - g[0]) - inter
        return inter / union if union > 0 else 0.0

    recalled = np.zeros((len(thresholds), len(budgets)))
    kept = np.zeros(len(budgets))
    num_gt = 0
    for v in videos:
        ranked = sorted(enumerate(proposals.get(v.name, [])), key=lambda item: (-item[1].score, item[0]))
        ranked = [(d.start, d.end) for _, d in ranked]
        gts = []
        for g in v.segments.tolist():
            if g not in gts:
                gts.append(g)
        num_gt += len(gts)
        for a, n in enumerate(budgets):
            kept[a] += min(n, len(ranked))
            for r, theta in enumerate(thresholds):
                for g in gts:
                    if any(tiou(p, g) >= theta - 1e-9 for p in ranked[:n]):
                        recalled[r, a] += 1
    total = sum(len(proposals.get(v.name, [])) for v in videos)
    return recalled / max(num_gt, 1), kept / len(videos), total / len(videos), num_gt


@st.composite
def scenes(draw):
    """Few videos on a coarse grid: duplicate ground truth, score ties and tIoUs exactly at thresholds."""
    videos, proposals = [], {}
    for i in range(draw(st.integers(1, 4))):
        n = draw(st.integers(0, 5))
        starts = draw(st.lists(st.integers(0, 12), min_size=n, max_size=n))
        lengths = draw(st.lists(st.integers(1, 8), min_size=n, max_size=n))
        videos.append(video(f"v{i}", [[s, s + length] for s, length in zip(starts, lengths)]))
        rows = draw(
            st.lists(st.tuples(st.integers(0, 3), st.integers(0, 14), st.integers(0, 10)), max_size=12)
        )
        if rows or draw(st.booleans()):
            proposals[f"v{i}"] = props(*[(score / 4, s, s + length) for score, s, length in rows])
    return videos, proposals


@given(scenes(), st.lists(st.integers(1, 14), min_size=1, max_size=4))
def test_matches_the_loop_reference(scene, budgets):
    videos, proposals = scene
    result = evaluate_proposals(videos, proposals, max_proposals=budgets, tiou_thresholds=THETAS)
    recall, kept, per_video, num_gt = reference(videos, proposals, budgets, [*THETAS, 0.5, 0.7])
    assert result.num_ground_truth == num_gt
    if num_gt:
        np.testing.assert_allclose(result.average_recall, recall[: len(THETAS)].mean(axis=0), atol=1e-12)
        np.testing.assert_allclose(result.recall, recall[len(THETAS) :], atol=1e-12)
    np.testing.assert_allclose(result.kept_per_video, kept)
    assert result.proposals_per_video == pytest.approx(per_video)
    # the curve at cut N is the result at budget N
    cuts = result.curve_cut.tolist()
    at_cuts = evaluate_proposals(videos, proposals, max_proposals=cuts, tiou_thresholds=THETAS)
    np.testing.assert_array_equal(result.curve_average_recall, at_cuts.average_recall)
    np.testing.assert_array_equal(result.curve_recall, at_cuts.recall)
    np.testing.assert_array_equal(result.curve_kept, at_cuts.kept_per_video)


@given(scenes())
def test_monotone_in_budget_and_threshold(scene):
    videos, proposals = scene
    if not any(len(v.segments) for v in videos):
        return
    thresholds = (0.1, 0.3, 0.5, 0.7, 0.9)
    result = evaluate_proposals(videos, proposals, max_proposals=(1, 2, 3, 5, 8, 13), recall_tiou=thresholds)
    assert np.all(np.diff(result.recall, axis=1) >= 0)  # more proposals never lose a recalled instance
    assert np.all(np.diff(result.recall, axis=0) <= 0)  # a stricter threshold never recalls more
    assert np.all(np.diff(result.average_recall) >= 0)
    assert np.all(np.diff(result.curve_average_recall) >= 0) and np.all(np.diff(result.curve_kept) > 0)
    assert np.all(result.kept_per_video <= np.minimum(result.max_proposals, result.proposals_per_video))


@given(scenes(), st.randoms(use_true_random=False))
def test_video_order_does_not_matter(scene, random):
    videos, proposals = scene
    shuffled = list(videos)
    random.shuffle(shuffled)
    a, b = evaluate_proposals(videos, proposals), evaluate_proposals(shuffled, proposals)
    np.testing.assert_array_equal(a.recall, b.recall)
    np.testing.assert_array_equal(a.curve_average_recall, b.curve_average_recall)


def test_docstring_examples():
    result = doctest.testmod(wstal.recall, extraglobs={"np": np})
    assert result.attempted > 0 and result.failed == 0


def test_result_is_frozen(two_videos):
    result = evaluate_proposals(*two_videos)
    assert isinstance(result, ProposalResult)
    with pytest.raises(AttributeError):
        result.proposals_per_video = 100.0
