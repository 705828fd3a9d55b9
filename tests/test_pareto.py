"""Pareto front, exact hypervolume and the trade-off plot."""
import itertools

import numpy as np
import pytest

from mtalign_jax.eval.pareto import hypervolume, label_directions, pareto_front, plot_front


def test_pareto_front_hand_made():
    pts = np.array([[1, 3], [2, 2], [3, 1], [1, 1], [2, 2], [0.5, 3], [3, 0.5]])
    # (1,1), (0.5,3) and (3,0.5) are dominated; the duplicate (2,2) is kept twice
    assert pareto_front(pts).tolist() == [0, 1, 2, 4]
    # minimising both axes: (0.5,3), (1,1) and (3,0.5) are the front
    assert pareto_front(pts, maximize=False).tolist() == [3, 5, 6]
    # mixed orientation: maximise x, minimise y
    assert pareto_front(pts, maximize=[True, False]).tolist() == [6]


def test_hypervolume_2d_staircase():
    pts = np.array([[1, 3], [2, 2], [3, 1]])
    assert hypervolume(pts, [0, 0]) == pytest.approx(6.0)
    # dominated and out-of-box points change nothing
    more = np.vstack([pts, [[1, 1], [-1, 5], [0.5, 0.5]]])
    assert hypervolume(more, [0, 0]) == pytest.approx(6.0)
    # ref (1,1): (1,3) and (3,1) sit on the reference box edge; only (2,2)'s unit square counts
    assert hypervolume(pts, [1, 1]) == pytest.approx(1.0)
    # ref (.5,.5): slabs 2.5*0.5 (y in .5..1) + 1.5*1 (y in 1..2) + 0.5*1 (y in 2..3)
    assert hypervolume(pts, [0.5, 0.5]) == pytest.approx(3.25)
    assert hypervolume(-pts, [0, 0], maximize=False) == pytest.approx(6.0)


def _grid_volume(pts, ref, n=40):
    """Midpoint grid estimate of the dominated volume, exact on the integer grids used here."""
    hi = pts.max(axis=0)
    axes = [np.linspace(r, h, n, endpoint=False) + (h - r) / (2 * n) for r, h in zip(ref, hi)]
    cells = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(ref))
    dom = np.any(np.all(cells[:, None, :] <= pts[None], axis=-1), axis=1)
    return dom.mean() * np.prod(hi - np.asarray(ref))


def test_hypervolume_3d_known():
    # unit cube corners: union of [0,1]x[0,1]x[0,2], [0,2]x[0,1]x[0,1], [0,1]x[0,2]x[0,1]
    pts = np.array([[1, 1, 2], [2, 1, 1], [1, 2, 1]])
    # inclusion-exclusion: 2 + 2 + 2 - 1 - 1 - 1 + 1 = 4
    assert hypervolume(pts, [0, 0, 0]) == pytest.approx(4.0)
    assert hypervolume(pts[:1], [0, 0, 0]) == pytest.approx(2.0)


def test_hypervolume_3d_matches_inclusion_exclusion():
    rng = np.random.default_rng(0)
    pts = rng.integers(1, 6, size=(6, 3)).astype(float)
    ref = np.zeros(3)
    exact = 0.0
    for k in range(1, len(pts) + 1):
        for sub in itertools.combinations(range(len(pts)), k):
            exact += (-1) ** (k + 1) * np.prod(pts[list(sub)].min(axis=0) - ref)
    assert hypervolume(pts, ref) == pytest.approx(exact)
    assert hypervolume(pts, ref) == pytest.approx(_grid_volume(pts, ref, n=10))


def test_plot_front_writes_png(tmp_path):
    curve = np.array([[0.2, 0.9], [0.5, 0.7], [0.6, 0.4], [0.8, 0.3]])
    labels = ["(0,1)", "(.25,.75)", "(.5,.5)", "(1,0)"]
    out = plot_front(curve, labels, {"SFT": (0.3, 0.3), "DPO soup": (0.55, 0.6)},
                     tmp_path / "sub" / "front.png", "accuracy", "engagement", "trade-off")
    data = (tmp_path / "sub" / "front.png").read_bytes()
    assert out.endswith("front.png") and len(data) > 5000
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="labels"):
        plot_front(curve, labels[:2], {}, tmp_path / "x.png", "a", "b", "c")


def test_label_directions_point_away_from_the_nearest_neighbour():
    # the demo's case: two sweep points sharing x, 0.021 apart in y, others far away
    curve = np.array([[0.333, 0.792], [0.292, 0.771], [0.292, 0.750], [0.25, 0.73],
                      [0.188, 0.708]])
    base = np.array([[0.229, 0.625], [0.104, 0.375]])
    d = label_directions(curve, base)
    assert d.shape == (5, 2)
    np.testing.assert_allclose(np.hypot(d[:, 0], d[:, 1]), 1.0, rtol=1e-12)
    assert d[1, 1] > 0.5 and d[2, 1] < -0.5       # upper label above, lower label below
    # a lone point and coincident points get the default up-right direction
    np.testing.assert_allclose(label_directions([[0.5, 0.5]]), [[2 ** -0.5, 2 ** -0.5]])
    np.testing.assert_allclose(label_directions([[0.5, 0.5], [0.5, 0.5]]),
                               [[2 ** -0.5, 2 ** -0.5]] * 2)
    # mirror symmetry: a point left of its only neighbour points left
    d = label_directions([[0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(d, [[-1.0, 0.0], [1.0, 0.0]], atol=1e-12)
