"""Tests of the detection evaluator and the detection JSON: hand-worked cases, properties, a plain reference.

Hand-worked cases show their arithmetic in comments. AP is all-point interpolated:
AP = (1 / #GT) * sum over true positives of the precision envelope (max precision at this rank or later).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wstal.data import SNIPPET_SECONDS, Video, WSTALDataset
from wstal.evaluation import TIOU_THRESHOLDS, Detection, MAPResult, evaluate_detections, temporal_iou
from wstal.io import read_activitynet_json, write_activitynet_json
from wstal.thumos import ANNOTATIONS_DIR, FEATURES_FILE, load_thumos14

THUMOS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "thumos14"


def video(name: str, segments, classes, num_classes: int = 1, duration: float = 100.0) -> Video:
    label = np.zeros(num_classes)
    label[list(classes)] = 1.0
    return Video(name, np.zeros((2, 1)), np.zeros((2, 1)), label, segments, classes, duration)


def ap_at(videos, detections, num_classes=1, threshold=0.5, **options) -> np.ndarray:
    return evaluate_detections(videos, detections, num_classes, tiou_thresholds=(threshold,), **options).ap[0]


# --------------------------------------------------------------------------------------------------------------
# tIoU


def test_temporal_iou_hand_values():
    # [0, 2] vs [1, 3]: intersection 1, union 3; vs [0, 1]: 1 / 2; vs [5, 6]: disjoint; [2, 2] vs [2, 2]: empty union
    np.testing.assert_allclose(
        temporal_iou([[0, 2], [2, 2]], [[1, 3], [0, 1], [5, 6], [2, 2]]), [[1 / 3, 0.5, 0, 0], [0, 0, 0, 0]]
    )
    assert temporal_iou(np.zeros((0, 2)), [[0, 1]]).shape == (0, 1)
    with pytest.raises(ValueError, match=r"b must have shape \(N, 2\)"):
        temporal_iou([[0, 1]], [0, 1])


# --------------------------------------------------------------------------------------------------------------
# hand-worked cases


def test_all_point_interpolation():
    # 3 GT; ranked TP FP TP FP TP: precision 1, 1/2, 2/3, 2/4, 3/5.
    # Envelope at the TPs: rank 1 -> 1, rank 3 -> max(2/3, 1/2, 3/5) = 2/3, rank 5 -> 3/5.
    # AP = (1 + 2/3 + 3/5) / 3 = 0.75555...
    v = video("v", [[0, 10], [20, 30], [40, 50]], [0, 0, 0])
    dets = [(0.9, 0, 10), (0.8, 60, 70), (0.7, 20, 30), (0.6, 80, 90), (0.5, 40, 50)]
    result = ap_at([v], {"v": [Detection(0, s, a, b) for s, a, b in dets]})
    assert result[0] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)


def test_ground_truth_claimed_twice_counts_once():
    # GT g1 [0, 10], g2 [20, 30]. d1 [0, 10] takes g1; d2 [1, 10] overlaps g1 by tIoU 0.9 but g1 is taken and g2
    # is not within reach -> FP; d3 [20, 30] takes g2. TP FP TP: precision 1, 1/2, 2/3;
    # envelope at the TPs 1 and 2/3 -> AP = (1 + 2/3) / 2 = 0.8333...
    v = video("v", [[0, 10], [20, 30]], [0, 0])
    dets = {"v": [Detection(0, 0.9, 0, 10), Detection(0, 0.8, 1, 10), Detection(0, 0.7, 20, 30)]}
    assert ap_at([v], dets)[0] == pytest.approx(5 / 6)


def test_tiou_equal_to_the_threshold_matches():
    # GT [0, 10], detection [0, 5]: intersection 5, union 10 -> tIoU exactly 0.5.
    v = video("v", [[0, 10]], [0])
    assert ap_at([v], {"v": [Detection(0, 1.0, 0, 5)]}, threshold=0.5)[0] == 1.0
    assert ap_at([v], {"v": [Detection(0, 1.0, 0, 5)]}, threshold=0.6)[0] == 0.0
    # [0, 4.99]: tIoU 0.499 just misses 0.5
    assert ap_at([v], {"v": [Detection(0, 1.0, 0, 4.99)]}, threshold=0.5)[0] == 0.0
    # in seconds that are not exact binary fractions: [0.1, 0.3] vs [0.1, 0.5] is 0.5 up to rounding
    w = video("w", [[0.1, 0.5]], [0])
    assert ap_at([w], {"w": [Detection(0, 1.0, 0.1, 0.3)]}, threshold=0.5)[0] == 1.0


def test_the_docstring_example_by_hand():
    # GT [1, 3]. d1 [1, 2] (0.9) has tIoU 1/2, d2 [1, 3] (0.8) tIoU 1.
    # At 0.5 d1 takes the GT, d2 is a duplicate: TP FP -> AP 1.
    # At 0.7 d1 misses, d2 matches: FP TP -> precision 0, 1/2 -> AP 1/2.
    v = video("v", [[1, 3]], [0])
    dets = {"v": [Detection(0, 0.9, 1, 2), Detection(0, 0.8, 1, 3)]}
    result = evaluate_detections([v], dets, 1, tiou_thresholds=(0.5, 0.7))
    np.testing.assert_allclose(result.mean_ap, [1.0, 0.5])


def test_score_ties_follow_video_order_then_list_order():
    # One GT, in video "b". Two detections with equal score and tIoU 1: the one in "a" is a FP
    # (no GT of its class in "a"). Video order a, b ranks FP TP -> AP 1/2; order b, a ranks TP FP -> AP 1.
    a, b = video("a", [], []), video("b", [[0, 10]], [0])
    dets = {"a": [Detection(0, 0.5, 0, 10)], "b": [Detection(0, 0.5, 0, 10)]}
    assert ap_at([a, b], dets)[0] == 0.5
    assert ap_at([b, a], dets)[0] == 1.0
    # within a video, list order: [0, 3] (tIoU 0.3, FP at 0.5) before [0, 10] -> FP TP -> 1/2; swapped -> 1
    first_miss = {"b": [Detection(0, 0.5, 0, 3), Detection(0, 0.5, 0, 10)]}
    assert ap_at([b], first_miss)[0] == 0.5
    assert ap_at([b], {"b": first_miss["b"][::-1]})[0] == 1.0


def test_equal_tiou_goes_to_the_ground_truth_listed_first():
    # GT g1 [0, 4], g2 [4, 8]. d1 [2, 6] has tIoU 2/6 with both -> takes g1 (listed first) at threshold 0.3.
    # d2 [4, 8] then takes g2 (tIoU 1): TP TP -> AP 1. (Had d1 taken g2, d2 would be a FP: AP 1/2.)
    v = video("v", [[0, 4], [4, 8]], [0, 0])
    dets = {"v": [Detection(0, 0.9, 2, 6), Detection(0, 0.8, 4, 8)]}
    assert ap_at([v], dets, threshold=0.3)[0] == 1.0
    # a detection prefers the higher tIoU even if that ground truth is listed later:
    # d [3, 8] has tIoU 1/8 with g1 and 4/5 with g2 -> g2; then [0, 4] takes g1: AP 1
    dets = {"v": [Detection(0, 0.9, 3, 8), Detection(0, 0.8, 0, 4)]}
    assert ap_at([v], dets, threshold=0.1)[0] == 1.0


def test_empty_predictions_and_a_class_without_predictions():
    # classes 0 and 1 have GT, class 2 has none
    v = video("v", [[0, 10], [20, 30]], [0, 1], num_classes=3)
    empty = evaluate_detections([v], {}, 3)
    assert np.all(empty.ap[:, :2] == 0) and np.all(np.isnan(empty.ap[:, 2]))
    assert np.all(empty.mean_ap == 0)
    # perfect class 0, nothing for class 1: AP 1 and 0 -> mAP 1/2 at every threshold
    only_zero = evaluate_detections([v], {"v": [Detection(0, 0.9, 0, 10)]}, 3)
    np.testing.assert_array_equal(only_zero.ap[:, :2], np.tile([1.0, 0.0], (7, 1)))
    np.testing.assert_allclose(only_zero.mean_ap, 0.5)
    assert only_zero.averages == pytest.approx({"0.1:0.5": 0.5, "0.3:0.7": 0.5, "0.1:0.7": 0.5})


def test_class_without_ground_truth_is_nan_and_left_out_of_the_mean():
    # class 1 has detections but no GT anywhere: no AP; the mean is class 0's AP alone
    v = video("v", [[0, 10]], [0], num_classes=2)
    result = evaluate_detections([v], {"v": [Detection(0, 0.9, 0, 10), Detection(1, 0.99, 0, 10)]}, 2)
    assert np.all(np.isnan(result.ap[:, 1])) and np.all(result.mean_ap == 1.0)
    np.testing.assert_array_equal(result.num_ground_truth, [1, 0])
    nothing = evaluate_detections([video("w", [], [], num_classes=2)], {}, 2)
    assert np.all(np.isnan(nothing.mean_ap))


def test_snippet_units_round_ground_truth_half_to_even():
    # GT [0, 1.6] s = [0, 2.5] snippets -> rounded half to even (Python's round, as CO2-Net) -> [0, 2].
    # Detection [0, 1.28] s = [0, 2] snippets: tIoU 1 in snippets, 1.28 / 1.6 = 0.8 in seconds.
    v = video("v", [[0.0, 1.6]], [0])
    dets = {"v": [Detection(0, 1.0, 0.0, 2 * SNIPPET_SECONDS)]}
    assert ap_at([v], dets, threshold=0.9)[0] == 0.0
    assert ap_at([v], dets, threshold=0.9, snippet_units=True)[0] == 1.0
    # detections are not rounded: [0, 1.0] s = [0, 1.5625] snippets -> tIoU 0.78 with [0, 2]
    assert ap_at([v], {"v": [Detection(0, 1.0, 0.0, 1.0)]}, threshold=0.8, snippet_units=True)[0] == 0.0


def test_ambiguous_regions_drop_overlapping_detections():
    # GT [0, 10]; d1 [20, 25] (0.9) is a FP, d2 [0, 10] (0.8) a TP: FP TP -> AP 1/2.
    # d1 overlaps the ambiguous region [22, 30] -> dropped -> AP 1. Merely touching it ([20, 22]) is no overlap.
    v = video("v", [[0, 10]], [0])
    dets = {"v": [Detection(0, 0.9, 20, 25), Detection(0, 0.8, 0, 10)]}
    regions = {"v": np.array([[22.0, 30.0]])}
    assert ap_at([v], dets)[0] == 0.5
    assert ap_at([v], dets, ambiguous=regions)[0] == 1.0
    touching = {"v": [Detection(0, 0.9, 20, 22), Detection(0, 0.8, 0, 10)]}
    assert ap_at([v], touching, ambiguous=regions)[0] == 0.5
    # in snippet units the region is rounded like ground truth: [22, 30] s = [34.4, 46.9] -> [34, 47] snippets.
    # d [21.0, 21.9] s = [32.8, 34.2] snippets misses the region in seconds but overlaps it in snippets.
    near = {"v": [Detection(0, 0.9, 21.0, 21.9), Detection(0, 0.8, 0, 10)]}
    assert ap_at([v], near, ambiguous=regions, threshold=0.1)[0] == 0.5
    assert ap_at([v], near, ambiguous=regions, snippet_units=True, threshold=0.1)[0] == 1.0


@pytest.mark.parametrize(
    ("detections", "error", "message"),
    [
        ({"nope": []}, ValueError, "not among the evaluated videos"),
        ({"v": [Detection(3, 0.5, 0, 1)]}, ValueError, r"class indices in \[0, 2\)"),
        ({"v": [Detection(0, 0.5, 2, 1)]}, ValueError, "end >= start"),
        ({"v": [Detection(0, float("nan"), 0, 1)]}, ValueError, "finite"),
        ({"v": [(0, 0.5, 1)]}, TypeError, "label, score, start, end"),
    ],
)
def test_rejects_bad_detections(detections, error, message):
    with pytest.raises(error, match=message):
        evaluate_detections([video("v", [[0, 1]], [0], num_classes=2)], detections, 2)


def test_rejects_bad_arguments():
    v = video("v", [[0, 1]], [1], num_classes=2)
    with pytest.raises(ValueError, match="tiou_thresholds"):
        evaluate_detections([v], {}, 2, tiou_thresholds=(0.0, 0.5))
    with pytest.raises(ValueError, match="num_classes"):
        evaluate_detections([v], {}, 0)
    with pytest.raises(ValueError, match="num_classes is 1"):
        evaluate_detections([v], {}, 1)
    with pytest.raises(ValueError, match="unique names"):
        evaluate_detections([v, v], {}, 2)


def test_result_table_and_dict():
    v = video("v", [[0, 10]], [0], num_classes=2)
    result = evaluate_detections([v], {"v": [Detection(0, 0.9, 0, 6)]}, 2)  # tIoU 0.6
    lines = result.table().splitlines()
    assert (
        lines[0]
        == "| tIoU | 0.1 | 0.2 | 0.3 | 0.4 | 0.5 | 0.6 | 0.7 | AVG 0.1:0.5 | AVG 0.3:0.7 | AVG 0.1:0.7 |"
    )
    # AP 1 up to 0.6, 0 at 0.7; averages 5/5, 4/5 and 6/7
    assert (
        lines[2] == "| mAP (%) | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 | 0.0 | 100.0 | 80.0 | 85.7 |"
    )
    as_dict = json.loads(json.dumps(result.as_dict()))
    assert as_dict["ap"][0] == [1.0, None] and as_dict["num_ground_truth"] == [1, 0]
    assert as_dict["averages"]["0.3:0.7"] == pytest.approx(0.8)
    assert isinstance(result, MAPResult) and result.tiou_thresholds.tolist() == list(TIOU_THRESHOLDS)


# --------------------------------------------------------------------------------------------------------------
# against a plain implementation of the ActivityNet loop, and properties


def reference_ap(videos, detections, num_classes, thresholds) -> np.ndarray:
    """The ActivityNet evaluator written the slow obvious way (one detection at a time)."""
    ap = np.full((len(thresholds), num_classes), np.nan)
    rank_of_video = {v.name: i for i, v in enumerate(videos)}
    for c in range(num_classes):
        gts = [(v.name, seg) for v in videos for seg, k in zip(v.segments, v.segment_classes) if k == c]
        if not gts:
            continue
        ranked = sorted(
            ((name, j, d) for name, ds in detections.items() for j, d in enumerate(ds) if d.label == c),
            key=lambda x: (-x[2].score, rank_of_video[x[0]], x[1]),
        )
        for t, threshold in enumerate(thresholds):
            taken = [False] * len(gts)
            hits = []
            for name, _, d in ranked:
                candidates = []
                for g, (gt_video, (start, end)) in enumerate(gts):
                    if gt_video == name:
                        inter = max(0.0, min(d.end, end) - max(d.start, start))
                        union = (d.end - d.start) + (end - start) - inter
                        candidates.append((-(inter / union if union > 0 else 0.0), g))
                hit = False
                for negative_iou, g in sorted(candidates):
                    if -negative_iou < threshold - 1e-9:
                        break
                    if not taken[g]:
                        taken[g] = hit = True
                        break
                hits.append(hit)
            if not hits:
                ap[t, c] = 0.0
                continue
            tp = np.cumsum(hits)
            precision = np.concatenate([[0], tp / np.arange(1, len(hits) + 1), [0]])
            recall = np.concatenate([[0], tp / len(gts), [1]])
            for i in range(len(precision) - 2, -1, -1):
                precision[i] = max(precision[i], precision[i + 1])
            steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
            ap[t, c] = np.sum((recall[steps] - recall[steps - 1]) * precision[steps])
    return ap


@st.composite
def scenes(draw, max_videos=3, max_classes=3, min_length=0):
    """Videos on an integer grid with coarse scores, so that tIoU ties and score ties are frequent."""
    num_classes = draw(st.integers(1, max_classes))
    videos, detections = [], {}
    for i in range(draw(st.integers(1, max_videos))):
        n = draw(st.integers(0, 5))
        starts = draw(st.lists(st.integers(0, 12), min_size=n, max_size=n))
        lengths = draw(st.lists(st.integers(min_length, 6), min_size=n, max_size=n))
        classes = draw(st.lists(st.integers(0, num_classes - 1), min_size=n, max_size=n))
        segments = [[s, s + length] for s, length in zip(starts, lengths)]
        videos.append(video(f"v{i}", segments, classes, num_classes))
        dets = draw(
            st.lists(
                st.tuples(
                    st.integers(0, num_classes - 1), st.integers(0, 3), st.integers(0, 12), st.integers(0, 6)
                ),
                max_size=10,
            )
        )
        detections[f"v{i}"] = [Detection(k, s / 4, a, a + b) for k, s, a, b in dets]
    return videos, detections, num_classes


@settings(max_examples=60)
@given(scenes())
def test_matches_the_plain_activitynet_loop(scene):
    videos, detections, num_classes = scene
    thresholds = (0.1, 0.3, 0.5, 0.7)
    result = evaluate_detections(videos, detections, num_classes, tiou_thresholds=thresholds)
    np.testing.assert_allclose(
        result.ap, reference_ap(videos, detections, num_classes, thresholds), equal_nan=True
    )


@given(scenes(min_length=1), st.randoms(use_true_random=False))
def test_perfect_predictions_give_map_one(scene, random):
    videos, _, num_classes = scene
    perfect = {
        v.name: [Detection(int(k), random.random(), s, e) for (s, e), k in zip(v.segments, v.segment_classes)]
        for v in videos
    }
    result = evaluate_detections(videos, perfect, num_classes)
    has_gt = result.num_ground_truth > 0
    assert np.all(result.ap[:, has_gt] == 1.0)
    assert np.all(np.isnan(result.ap[:, ~has_gt]))
    if has_gt.any():
        assert np.all(result.mean_ap == 1.0) and all(v == 1.0 for v in result.averages.values())


@given(scenes(), st.data())
def test_adding_a_false_positive_never_raises_ap(scene, data):
    videos, detections, num_classes = scene
    before = evaluate_detections(videos, detections, num_classes)
    # a detection far from every ground truth; the case is the lowest score, any score must hold
    scores = [d.score for ds in detections.values() for d in ds]
    lowest = min(scores, default=1.0) - 0.5
    score = data.draw(st.sampled_from([lowest, 0.5, 2.0]))
    target = data.draw(st.sampled_from([v.name for v in videos]))
    label = data.draw(st.integers(0, num_classes - 1))
    with_fp = {**detections, target: [*detections[target], Detection(label, score, 500.0, 510.0)]}
    after = evaluate_detections(videos, with_fp, num_classes)
    has_gt = before.num_ground_truth > 0
    assert np.all(after.ap[:, has_gt] <= before.ap[:, has_gt] + 1e-12)
    if score == lowest:  # ranked last: it cannot change any precision before it
        np.testing.assert_allclose(after.ap, before.ap, equal_nan=True)


@given(scenes(), st.randoms(use_true_random=False))
def test_order_of_videos_and_lists_does_not_matter_without_score_ties(scene, random):
    videos, detections, num_classes = scene
    total = sum(len(ds) for ds in detections.values())
    ranks = iter(random.sample(range(total), total))  # distinct scores
    distinct = {name: [d._replace(score=next(ranks) / total) for d in ds] for name, ds in detections.items()}
    shuffled = {name: random.sample(ds, len(ds)) for name, ds in distinct.items()}
    a = evaluate_detections(videos, distinct, num_classes)
    b = evaluate_detections(random.sample(videos, len(videos)), shuffled, num_classes)
    np.testing.assert_allclose(a.ap, b.ap, equal_nan=True)


# --------------------------------------------------------------------------------------------------------------
# real THUMOS14 ground truth


@pytest.fixture(scope="module")
def thumos(tmp_path_factory) -> WSTALDataset:
    if not THUMOS_DIR.is_dir():
        pytest.skip("../shared/data/thumos14 is not available")
    root = tmp_path_factory.mktemp("thumos")
    (root / ANNOTATIONS_DIR).symlink_to(THUMOS_DIR)  # a link, never a copy
    features = np.empty(len(np.load(THUMOS_DIR / "videoname.npy")), dtype=object)
    features[:] = [np.zeros((1, 2048), np.float32) for _ in features]
    np.save(root / FEATURES_FILE, features, allow_pickle=True)
    return load_thumos14(root)


def test_thumos_ground_truth_is_evaluated_as_given(thumos):
    perfect = {
        v.name: [Detection(int(k), 1.0, s, e) for (s, e), k in zip(v.segments, v.segment_classes)]
        for v in thumos.test
    }
    result = evaluate_detections(thumos.test, perfect, 20)
    # the CliffDiving-as-Diving pairs are already in the files and are not added again
    assert result.num_ground_truth.sum() == 3358
    assert np.all(result.ap == 1.0)


def test_thumos_conventions_on_real_ground_truth(thumos):
    # detections on the rounded snippet grid: every ground truth is matched at every threshold except the
    # 17 test instances shorter than a snippet, which round to zero length and can never be matched
    snapped = {
        v.name: [
            Detection(int(k), 1.0, *(np.round(np.array([s, e]) / SNIPPET_SECONDS) * SNIPPET_SECONDS))
            for (s, e), k in zip(v.segments, v.segment_classes)
        ]
        for v in thumos.test
    }
    plain = evaluate_detections(thumos.test, snapped, 20, snippet_units=True)
    filtered = evaluate_detections(thumos.test, snapped, 20, snippet_units=True, ambiguous=thumos.ambiguous)
    assert plain.num_ground_truth.sum() == filtered.num_ground_truth.sum() == 3358
    np.testing.assert_allclose(plain.mean_ap, plain.mean_ap[0])
    assert 0.98 < plain.mean_ap[0] < 1.0
    assert np.all(filtered.mean_ap < plain.mean_ap)  # a few instances overlap an ambiguous region


# --------------------------------------------------------------------------------------------------------------
# detection JSON


def test_json_round_trip_and_format(tmp_path):
    detections = {
        "video_test_0000004": [Detection(1, 0.75, 0.2, 1.1), Detection(0, 0.5, 3.0, 4.25)],
        "video_test_0000006": [],
    }
    path = tmp_path / "dets.json"
    write_activitynet_json(path, detections, ["CliffDiving", "Diving"])
    document = json.loads(path.read_text())
    assert document["results"]["video_test_0000004"][0] == {
        "label": "Diving",
        "score": 0.75,
        "segment": [0.2, 1.1],
    }
    assert read_activitynet_json(path, ["CliffDiving", "Diving"]) == detections


def test_json_reads_files_written_by_other_code(tmp_path):
    path = tmp_path / "proposals.json"
    path.write_text(
        json.dumps({"results": {"v": [{"label": "A", "score": 1, "segment": [0, 2.5], "extra": 3}]}})
    )
    assert read_activitynet_json(path, ["A"]) == {"v": [Detection(0, 1.0, 0.0, 2.5)]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ('{"version": 1}', "'results'"),
        ('{"results": {"v": {}}}', r"results\['v'\] must be a list"),
        ('{"results": {"v": [{"label": "B", "score": 1, "segment": [0, 1]}]}}', "unknown label 'B'"),
        (
            '{"results": {"v": [{"label": "A", "score": 1, "segment": [0]}]}}',
            r"segment must be \[start, end\]",
        ),
        ('{"results": {"v": [{"label": "A", "score": "x", "segment": [0, 1]}]}}', "finite numbers"),
        ('{"results": {"v": [{"label": "A", "segment": [0, 1]}]}}', "'score'"),
    ],
)
def test_json_rejects_malformed_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_activitynet_json(path, ["A"])


def test_json_writer_and_reader_validate(tmp_path):
    with pytest.raises(ValueError, match="class index"):
        write_activitynet_json(tmp_path / "x.json", {"v": [Detection(2, 0.5, 0, 1)]}, ["A", "B"])
    with pytest.raises(ValueError, match="finite"):
        write_activitynet_json(tmp_path / "x.json", {"v": [Detection(0, float("inf"), 0, 1)]}, ["A"])
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_activitynet_json(tmp_path / "missing.json", ["A"])
