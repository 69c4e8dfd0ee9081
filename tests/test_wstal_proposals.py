"""Tests of the proposal utilities: each vectorized function against a plain Python loop, plus hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wstal import proposals
from wstal.proposals import group_segments, nms_1d, outer_inner_contrast, roi_align_1d, soft_nms_1d

# --------------------------------------------------------------------------------------------------------------
# plain references


def loop_group(scores: list[float], thresholds: list[float], min_length: int) -> list[list[int]]:
    found = set()
    for h in thresholds:
        start = None
        for t, s in enumerate([*scores, -math.inf]):
            if s > h and start is None:
                start = t
            elif s <= h and start is not None:
                if t - start >= min_length:
                    found.add((start, t))
                start = None
    return [list(x) for x in sorted(found)]


def loop_contrast(scores: list[float], segment: tuple[int, int], ratio: float) -> float:
    start, end = segment
    width = math.ceil((end - start) * ratio)
    inner = sum(scores[start:end]) / (end - start)
    outer = scores[max(0, start - width) : start] + scores[end : min(len(scores), end + width)]
    return inner - (sum(outer) / len(outer) if outer else 0.0)


def loop_iou(a, b) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def loop_nms(segments, scores, threshold) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if all(loop_iou(segments[i], segments[k]) <= threshold for k in keep):
            keep.append(i)
    return keep


def loop_soft_nms(segments, scores, sigma, threshold, max_keep):
    current = {i: s for i, s in enumerate(scores) if s >= threshold}
    keep, kept = [], []
    while current and (max_keep is None or len(keep) < max_keep):
        peak = max(current.values())
        best = min(i for i, s in current.items() if s >= peak - 4 * np.finfo(np.float64).eps * abs(peak))
        keep.append(best)
        kept.append(current.pop(best))
        for i in list(current):
            current[i] *= math.exp(-(loop_iou(segments[best], segments[i]) ** 2) / sigma)
            if current[i] < threshold:
                del current[i]
    return keep, kept


def signal(features: np.ndarray, x: float) -> np.ndarray:
    """The continuous signal roi_align_1d reads: knots at i + 0.5, zero knots at -0.5 and t + 0.5, zero beyond."""
    padded = np.concatenate([np.zeros((1, features.shape[1])), features, np.zeros((1, features.shape[1]))])
    position = x + 0.5
    if position <= 0 or position >= len(padded) - 1:
        return np.zeros(features.shape[1])
    left = math.floor(position)
    frac = position - left
    return (1 - frac) * padded[left] + frac * padded[left + 1]


def loop_roi_align(features: np.ndarray, rois: np.ndarray, bins: int, samples: int = 400) -> np.ndarray:
    """Each bin as the mean of many evenly spaced samples (midpoint rule)."""
    out = np.zeros((len(rois), bins, features.shape[1]))
    for n, (start, end) in enumerate(rois):
        width = (end - start) / bins
        for b in range(bins):
            xs = start + width * (b + (np.arange(samples) + 0.5) / samples)
            out[n, b] = np.mean([signal(features, x) for x in xs], axis=0)
    return out


# --------------------------------------------------------------------------------------------------------------
# group_segments


def test_group_segments_by_hand():
    scores = torch.tensor([0.1, 0.6, 0.9, 0.6, 0.2, 0.7, 0.7])
    # > 0.5: runs [1, 4) and [5, 7); > 0.8: [2, 3); > 0.65: [2, 3) again (deduplicated) and [5, 7)
    assert group_segments(scores, [0.5, 0.8, 0.65]).tolist() == [[1, 4], [2, 3], [5, 7]]
    assert group_segments(scores, [0.5, 0.8], min_length=2).tolist() == [[1, 4], [5, 7]]
    assert group_segments(scores, [0.95]).shape == (0, 2)
    assert group_segments(scores, [0.6]).tolist() == [[2, 3], [5, 7]]  # strictly greater than the threshold
    assert group_segments(scores, [0.5]).dtype == torch.int64


@given(
    st.lists(st.sampled_from([0.0, 0.2, 0.4, 0.6, 0.8, 1.0]), min_size=1, max_size=40),
    st.lists(st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9]), min_size=1, max_size=4),
    st.integers(1, 3),
)
def test_group_segments_matches_loop(scores, thresholds, min_length):
    result = group_segments(torch.tensor(scores, dtype=torch.float64), thresholds, min_length=min_length)
    assert result.tolist() == loop_group(scores, thresholds, min_length)


def test_group_segments_validates():
    with pytest.raises(ValueError, match=r"scores must have shape \(T,\)"):
        group_segments(torch.zeros(2, 3), [0.5])
    with pytest.raises(TypeError, match="floating-point"):
        group_segments(torch.zeros(3, dtype=torch.long), [0.5])
    with pytest.raises(ValueError, match="thresholds"):
        group_segments(torch.zeros(3), [])
    with pytest.raises(ValueError, match="min_length"):
        group_segments(torch.zeros(3), [0.5], min_length=0)


# --------------------------------------------------------------------------------------------------------------
# outer_inner_contrast


def test_outer_inner_contrast_by_hand():
    scores = torch.tensor([0.0, 0.2, 1.0, 1.0, 1.0, 1.0, 0.4, 0.0])
    # [2, 6): inside mean 1; context ceil(4 * 0.25) = 1 snippet each side: (0.2 + 0.4) / 2 = 0.3 -> 0.7
    # [0, 8): no context at all -> inside mean 4.6 / 8 = 0.575
    # [6, 8) with ratio 1: context [4, 6) on the left only (clipped at the end) -> 0.2 - 1.0 = -0.8
    result = outer_inner_contrast(scores, torch.tensor([[2, 6], [0, 8]]))
    torch.testing.assert_close(result, torch.tensor([0.7, 0.575]))
    torch.testing.assert_close(
        outer_inner_contrast(scores, torch.tensor([[6, 8]]), outer_ratio=1.0), torch.tensor([-0.8])
    )
    assert outer_inner_contrast(scores, torch.zeros(0, 2, dtype=torch.long)).shape == (0,)


@given(st.data(), st.integers(1, 30), st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0]))
def test_outer_inner_contrast_matches_loop(data, length, ratio):
    scores = data.draw(st.lists(st.floats(-2, 2, allow_nan=False), min_size=length, max_size=length))
    starts = data.draw(st.lists(st.integers(0, length - 1), min_size=1, max_size=6))
    segments = [(s, data.draw(st.integers(s + 1, length))) for s in starts]
    result = outer_inner_contrast(
        torch.tensor(scores, dtype=torch.float64), torch.tensor(segments), outer_ratio=ratio
    )
    expected = [loop_contrast(scores, segment, ratio) for segment in segments]
    np.testing.assert_allclose(result.numpy(), expected, atol=1e-12)


def test_outer_inner_contrast_validates():
    scores = torch.zeros(5)
    with pytest.raises(ValueError, match="0 <= start < end <= 5"):
        outer_inner_contrast(scores, torch.tensor([[3, 3]]))
    with pytest.raises(ValueError, match="0 <= start < end <= 5"):
        outer_inner_contrast(scores, torch.tensor([[3, 6]]))
    with pytest.raises(TypeError, match="integer tensor"):
        outer_inner_contrast(scores, torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"segments must have shape \(N, 2\)"):
        outer_inner_contrast(scores, torch.tensor([0, 1]))


# --------------------------------------------------------------------------------------------------------------
# NMS and soft-NMS

segment_sets = st.integers(0, 25).flatmap(
    lambda n: st.tuples(
        st.lists(st.tuples(st.integers(0, 20), st.integers(1, 8)), min_size=n, max_size=n),
        st.lists(st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9]), min_size=n, max_size=n),  # many score ties
    )
)


def as_tensors(pairs, scores):
    segments = torch.tensor([[float(s), float(s + n)] for s, n in pairs], dtype=torch.float64).reshape(-1, 2)
    return segments, torch.tensor(scores, dtype=torch.float64)


def test_nms_by_hand():
    segments = torch.tensor([[0.0, 4.0], [1.0, 4.0], [5.0, 6.0], [0.0, 2.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # order 3, 0, 1, 2. [0, 4] vs kept [0, 2]: tIoU 0.5, not > 0.5 -> kept; [1, 4] vs [0, 4]: 0.75 -> removed
    assert nms_1d(segments, scores, 0.5).tolist() == [3, 0, 2]
    # at 0.4: [0, 4] goes (0.5 > 0.4); [1, 4] vs [0, 2] is 1 / 4 -> stays
    assert nms_1d(segments, scores, 0.4).tolist() == [3, 1, 2]
    assert nms_1d(segments[:0], scores[:0], 0.5).tolist() == []


@given(segment_sets, st.sampled_from([0.0, 0.3, 0.5, 0.7]))
def test_nms_matches_loop(data, threshold):
    pairs, scores = data
    segments, score_tensor = as_tensors(pairs, scores)
    assert nms_1d(segments, score_tensor, threshold).tolist() == loop_nms(
        segments.tolist(), scores, threshold
    )


def test_soft_nms_by_hand():
    segments = torch.tensor([[0.0, 4.0], [0.0, 2.0], [10.0, 12.0]])
    scores = torch.tensor([0.9, 0.8, 0.3])
    keep, decayed = soft_nms_1d(segments, scores)
    # 0 first (0.9); [0, 2] has tIoU 0.5 with it -> 0.8 * exp(-0.25 / 0.5) = 0.4852 > 0.3, so it comes next
    assert keep.tolist() == [0, 1, 2]
    torch.testing.assert_close(decayed, torch.tensor([0.9, 0.8 * math.exp(-0.5), 0.3]))
    keep, _ = soft_nms_1d(segments, scores, score_threshold=0.5)  # 0.4852 < 0.5 is dropped, 0.3 too
    assert keep.tolist() == [0]
    assert soft_nms_1d(segments, scores, max_keep=2)[0].tolist() == [0, 1]
    keep, decayed = soft_nms_1d(segments[:0], scores[:0])
    assert keep.shape == decayed.shape == (0,)


@settings(max_examples=30)
@given(
    segment_sets, st.sampled_from([0.1, 0.5, 1.0]), st.sampled_from([1e-3, 0.2]), st.sampled_from([None, 3])
)
def test_soft_nms_matches_loop(data, sigma, threshold, max_keep):
    pairs, scores = data
    segments, score_tensor = as_tensors(pairs, scores)
    keep, decayed = soft_nms_1d(
        segments, score_tensor, sigma=sigma, score_threshold=threshold, max_keep=max_keep
    )
    expected_keep, expected_scores = loop_soft_nms(segments.tolist(), scores, sigma, threshold, max_keep)
    assert keep.tolist() == expected_keep
    np.testing.assert_allclose(decayed.numpy(), expected_scores, rtol=1e-12)


def test_nms_validates():
    segments, scores = torch.zeros(3, 2), torch.zeros(3)
    with pytest.raises(ValueError, match="one entry per segment"):
        nms_1d(segments, scores[:2], 0.5)
    with pytest.raises(TypeError, match="segments must be a floating-point"):
        nms_1d(segments.long(), scores, 0.5)
    with pytest.raises(ValueError, match="sigma"):
        soft_nms_1d(segments, scores, sigma=0.0)
    with pytest.raises(ValueError, match="max_keep"):
        soft_nms_1d(segments, scores, max_keep=-1)


# --------------------------------------------------------------------------------------------------------------
# roi_align_1d


def test_roi_align_by_hand():
    ramp = torch.arange(4.0)[:, None]  # snippet i has value i at x = i + 0.5
    # [0.5, 2.5) in 2 bins: the ramp's means over [0.5, 1.5) and [1.5, 2.5) are 0.5 and 1.5
    torch.testing.assert_close(
        roi_align_1d(ramp, torch.tensor([[0.5, 2.5]]), 2)[0, :, 0], torch.tensor([0.5, 1.5])
    )
    # a constant c inside the video pools to c. A bin on [-1, 0) sees zero up to x = -0.5, then the line from
    # 0 at x = -0.5 towards c at x = 0.5, which reaches c / 2 at x = 0: mean = (0.5 * c / 4) / 1 = c / 8 = 0.25
    constant = torch.full((6, 3), 2.0)
    torch.testing.assert_close(
        roi_align_1d(constant, torch.tensor([[0.5, 5.5]]), 5), torch.full((1, 5, 3), 2.0)
    )
    torch.testing.assert_close(
        roi_align_1d(constant, torch.tensor([[-1.0, 0.0]]), 1), torch.full((1, 1, 3), 0.25)
    )
    torch.testing.assert_close(roi_align_1d(constant, torch.tensor([[10.0, 12.0]]), 2), torch.zeros(1, 2, 3))
    assert roi_align_1d(constant, torch.zeros(0, 2), 4).shape == (0, 4, 3)


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 12), st.integers(1, 4), st.data())
def test_roi_align_matches_dense_sampling(length, bins, data):
    generator = torch.Generator().manual_seed(data.draw(st.integers(0, 1000)))
    features = torch.randn(length, 3, generator=generator, dtype=torch.float64)
    starts = data.draw(st.lists(st.floats(-3, length + 1), min_size=1, max_size=3))
    rois = torch.tensor([[s, s + data.draw(st.floats(0.1, 8))] for s in starts], dtype=torch.float64)
    expected = loop_roi_align(features.numpy(), rois.numpy(), bins)
    # the midpoint rule is exact for linear pieces; only bins holding a knot are off, by O(1 / samples^2)
    np.testing.assert_allclose(roi_align_1d(features, rois, bins).numpy(), expected, atol=1e-4)


def test_roi_align_dtype_gradient_and_chunking(monkeypatch):
    features = torch.randn(20, 4)
    rois = torch.tensor([[0.0, 5.0], [3.2, 9.9], [-2.0, 21.5]])
    out = roi_align_1d(features, rois, 3)
    assert out.dtype == torch.float32 and out.shape == (3, 3, 4)
    monkeypatch.setattr(proposals, "_ROI_CHUNK_ELEMENTS", 1)  # one roi per chunk
    torch.testing.assert_close(roi_align_1d(features, rois, 3), out)
    leaf = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: roi_align_1d(x, torch.tensor([[0.3, 4.1], [-1.0, 2.0]]), 3), (leaf,)
    )


def test_roi_align_validates():
    features = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="end > start"):
        roi_align_1d(features, torch.tensor([[2.0, 2.0]]), 2)
    with pytest.raises(TypeError, match="rois must be a floating-point"):
        roi_align_1d(features, torch.tensor([[0, 2]]), 2)
    with pytest.raises(ValueError, match="output_size"):
        roi_align_1d(features, torch.tensor([[0.0, 2.0]]), 0)
    with pytest.raises(ValueError, match=r"shape \(T, C\)"):
        roi_align_1d(torch.zeros(5), torch.tensor([[0.0, 2.0]]), 2)
