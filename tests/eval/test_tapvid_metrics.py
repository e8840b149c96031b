"""TAP-Vid metrics (arXiv:2211.03726 §3) against hand-computed numbers; query sampling and the 256-px scaling."""

import numpy as np
import pytest

from videossl.eval import tapvid as TV


def _video(num_tracks=3, T=6, seed=0):
    rng = np.random.default_rng(seed)
    target = rng.uniform(20, 230, size=(num_tracks, T, 2))
    occluded = np.zeros((num_tracks, T), bool)
    occluded[1, 3:5] = True  # track 1 hidden for two frames
    occluded[2, 0] = True  # track 2 first visible at frame 1
    return target, occluded


@pytest.mark.parametrize("mode", TV.QUERY_MODES)
def test_perfect_predictions_score_one(mode):
    target, occ = _video()
    q = TV.sample_queries(target, occ, mode)
    m = TV.tapvid_metrics(q.points, q.occluded, q.target, q.occluded.copy(), q.target.copy(), mode)
    assert m["average_jaccard"] == pytest.approx(1.0)
    assert m["average_pts_within_thresh"] == pytest.approx(1.0)
    assert m["occlusion_accuracy"] == pytest.approx(1.0)


@pytest.mark.parametrize("mode", TV.QUERY_MODES)
def test_all_predicted_occluded_gives_zero_jaccard_same_delta(mode):
    target, occ = _video()
    q = TV.sample_queries(target, occ, mode)
    pred = q.target + np.array([3.0, 0.0])  # 3 px off: within 4, 8, 16 only
    vis = TV.tapvid_metrics(q.points, q.occluded, q.target, q.occluded.copy(), pred, mode)
    hidden = TV.tapvid_metrics(q.points, q.occluded, q.target, np.ones_like(q.occluded), pred, mode)
    assert hidden["average_jaccard"] == 0.0
    assert hidden["average_pts_within_thresh"] == pytest.approx(vis["average_pts_within_thresh"])
    # OA of "all occluded" = fraction of scored points that are GT-occluded
    ev = TV.evaluation_mask(q.points[:, 0], q.target.shape[1], mode)
    assert hidden["occlusion_accuracy"] == pytest.approx((q.occluded & ev).sum() / ev.sum())


@pytest.mark.parametrize("mode", TV.QUERY_MODES)
def test_three_px_offset_with_correct_visibility(mode):
    target, occ = _video()
    q = TV.sample_queries(target, occ, mode)
    pred = q.target + np.array([0.0, 3.0])  # 3 px in y
    m = TV.tapvid_metrics(q.points, q.occluded, q.target, q.occluded.copy(), pred, mode)
    assert m["pts_within_1"] == 0.0 and m["pts_within_2"] == 0.0
    assert m["pts_within_4"] == m["pts_within_8"] == m["pts_within_16"] == 1.0
    assert m["jaccard_1"] == 0.0 and m["jaccard_2"] == 0.0 and m["jaccard_4"] == 1.0
    assert m["average_pts_within_thresh"] == pytest.approx(0.6)
    assert m["average_jaccard"] == pytest.approx(0.6)
    assert m["occlusion_accuracy"] == 1.0


def test_hand_computed_jaccard():
    # one query at frame 0, 5 frames: frames 1-4 scored (mode first)
    gt = np.zeros((1, 5, 2))
    gt_occ = np.array([[False, False, False, True, False]])
    pred = gt.copy()
    pred[0, 2] = [10.0, 0.0]  # frame 2 visible but 10 px off: within 16 only
    pred_occ = np.array([[False, False, False, False, True]])  # frame 3: FP (GT occluded); frame 4: missed
    q = np.array([[0.0, 0.0, 0.0]])
    m = TV.tapvid_metrics(q, gt_occ, gt, pred_occ, pred, "first")
    # scored frames 1..4: GT visible 1, 2, 4 (3 points)
    assert m["occlusion_accuracy"] == pytest.approx(2 / 4)  # frames 1, 2 right; 3, 4 wrong
    # δ < 16 (1, 2, 4, 8): within = frames 1, 4 (frame 4 is at 0 px, predicted occluded); TP = frame 1;
    # FP = frame 2 (beyond δ, predicted visible) + frame 3 (GT occluded) -> J = 1 / (3 + 2)
    assert m["pts_within_8"] == pytest.approx(2 / 3)
    assert m["jaccard_8"] == pytest.approx(1 / 5)
    # δ = 16: frame 2 within too -> TP 2, FP 1 (frame 3) -> 2 / 4
    assert m["pts_within_16"] == pytest.approx(1.0)
    assert m["jaccard_16"] == pytest.approx(2 / 4)
    assert m["average_jaccard"] == pytest.approx((4 * 0.2 + 0.5) / 5)


def test_mode_first_skips_up_to_and_including_the_query_frame():
    T = 6
    gt = np.zeros((1, T, 2))
    occ = np.zeros((1, T), bool)
    q = np.array([[3.0, 0.0, 0.0]])  # query at frame 3
    pred = gt.copy()
    pred[0, :4] = 100.0  # frames 0..3 (before and at the query) wrong
    pred_occ = occ.copy()
    pred_occ[0, :4] = True
    first = TV.tapvid_metrics(q, occ, gt, pred_occ, pred, "first")
    assert first["average_jaccard"] == 1.0 and first["occlusion_accuracy"] == 1.0
    assert TV.evaluation_mask(np.array([3]), T, "first").tolist() == [[False, False, False, False, True, True]]
    # strided scores the frames before the query too (not the query frame itself)
    strided = TV.tapvid_metrics(q, occ, gt, pred_occ, pred, "strided")
    assert strided["occlusion_accuracy"] == pytest.approx(2 / 5)
    assert TV.evaluation_mask(np.array([3]), T, "strided").tolist() == [[True, True, True, False, True, True]]
    pred_occ[0, 3] = False
    pred[0, 3] = 0.0
    strided_q = TV.tapvid_metrics(q, occ, gt, pred_occ, pred, "strided")
    assert strided_q == strided  # the query frame itself is never scored


def test_query_sampling():
    target, occ = _video(T=11)
    first = TV.sample_queries_first(target, occ)
    assert first.points[:, 0].tolist() == [0, 0, 1]  # track 2 first visible at frame 1
    assert np.allclose(first.points[2, 1:], target[2, 1, ::-1])  # (y, x)
    strided = TV.sample_queries_strided(target, occ)
    # frames 0, 5, 10: frame 0 has tracks 0, 1 (2 is occluded), frames 5 and 10 all three
    assert strided.points[:, 0].tolist() == [0, 0, 5, 5, 5, 10, 10, 10]
    assert strided.track.tolist() == [0, 1, 0, 1, 2, 0, 1, 2]
    never = np.ones((1, 4), bool)
    assert len(TV.sample_queries_first(np.zeros((1, 4, 2)), never)) == 0


def test_to_256_pixel_centres():
    # a 64-px frame: pixel centre 0 -> 2.0, centre 63 -> 254.0 (normalised (j + 0.5) / 64 times 256)
    assert TV.to_256(np.array([[0.0, 63.0]]), 64, 64).tolist() == [[2.0, 254.0]]
    assert np.allclose(TV.from_256(TV.to_256(np.array([[5.5, 7.25]]), 64, 32), 64, 32), [[5.5, 7.25]])
    assert TV.to_256(np.array([[0.5, 1.0]]), 1, 1, pixel_centres_at_integers=False).tolist() == [[128.0, 256.0]]


def test_mean_over_videos_skips_nan():
    m = TV.mean_metrics([{"average_jaccard": 0.5}, {"average_jaccard": 1.0}, {"average_jaccard": float("nan")}])
    assert m["average_jaccard"] == pytest.approx(0.75)
