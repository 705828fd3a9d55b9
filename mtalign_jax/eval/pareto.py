"""Pareto fronts, exact hypervolume and trade-off plots (numpy + matplotlib, no JAX).

- `pareto_front(points [N, D])`: indices of the non-dominated points.
- `hypervolume(points [N, D], ref [D])`: exact volume dominated by the points and bounded by
  `ref`. 2-D is a sort-and-sweep (O(N log N)); higher D slices along the last axis and recurses
  (HSO-style, exact; fine for the small fronts of a weight sweep, O(N^(D-1) log N)).
- `label_directions(points [N, 2], others [M, 2])`: where to put each point's label so that it
  points away from the other points, weighted by 1 / distance^2 (so mostly from the nearest;
  labels of points sharing an x or a y never swap).
- `plot_front(...)`: the head-weight curve, its front and the baselines as a PNG.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import numpy as np

Maximize = Union[bool, Sequence[bool]]


def _oriented(points, maximize: Maximize) -> np.ndarray:
    """Points flipped so that every axis is 'larger is better'. [N, D] float64."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"points must be [N, D], got shape {p.shape}")
    sign = np.where(np.broadcast_to(np.asarray(maximize, bool), (p.shape[1],)), 1.0, -1.0)
    return p * sign


def pareto_front(points, maximize: Maximize = True) -> np.ndarray:
    """Indices (ascending) of the non-dominated points.

    A point is dominated when another point is at least as good on every axis and strictly
    better on one. Duplicated points do not dominate each other (both are kept).

    Args:
      points: [N, D].
      maximize: True (all axes larger-is-better), False, or one bool per axis.
    Returns: int array [F].
    """
    p = _oriented(points, maximize)
    geq = np.all(p[:, None, :] >= p[None, :, :], axis=-1)   # [j, i]: j >= i everywhere
    gt = np.any(p[:, None, :] > p[None, :, :], axis=-1)     # [j, i]: j > i somewhere
    dominated = np.any(geq & gt, axis=0)
    return np.flatnonzero(~dominated)


def _hv2d(p: np.ndarray, ref: np.ndarray) -> float:
    """Area dominated by 2-D points (larger is better, all > ref) above ref."""
    order = np.argsort(-p[:, 0], kind="stable")
    area, best_y = 0.0, ref[1]
    for x, y in p[order]:            # sweep from the largest x down; keep the running max y
        if y > best_y:
            area += (x - ref[0]) * (y - best_y)
            best_y = y
    return area


def _hv(p: np.ndarray, ref: np.ndarray) -> float:
    if len(p) == 0:
        return 0.0
    d = p.shape[1]
    if d == 1:
        return float(np.max(p[:, 0]) - ref[0])
    if d == 2:
        return _hv2d(p, ref)
    # Slice along the last axis: between consecutive levels the cross-section is the
    # (D-1)-volume of the points whose last coordinate reaches the upper level.
    levels = np.unique(p[:, -1])[::-1]              # descending
    lows = np.append(levels[1:], ref[-1])
    vol = 0.0
    for hi, lo in zip(levels, lows):
        section = p[p[:, -1] >= hi][:, :-1]
        vol += _hv(section, ref[:-1]) * (hi - lo)
    return vol


def hypervolume(points, ref, maximize: Maximize = True) -> float:
    """Exact hypervolume of the region dominated by `points` and bounded by `ref`.

    Args:
      points: [N, D]; ref: [D] the reference (worst) point.
      maximize: True / False / per-axis bools (minimised axes are flipped, ref too).
    Returns: float. Points not strictly better than `ref` on every axis add nothing.
    """
    p = _oriented(points, maximize)
    r = _oriented(np.asarray(ref, np.float64)[None], maximize)[0]
    if r.shape != (p.shape[1],):
        raise ValueError(f"ref must be [D={p.shape[1]}], got shape {np.shape(ref)}")
    p = p[np.all(p > r, axis=1)]
    if len(p) == 0:
        return 0.0
    p = p[pareto_front(p)]
    return float(_hv(p, r))


def label_directions(points, others=None) -> np.ndarray:
    """Unit directions [N, 2] for the labels of `points` [N, 2]: away from the other points
    and `others` [M, 2], each pushing with weight 1 / distance^2 (in axis-range-normalised
    coordinates, so a small gap on a short axis counts as much as on a long one). The nearest
    neighbour dominates, so the labels of two points sharing an x or a y never swap.

    Where the pushes cancel (or there is no other point) the label goes up-right,
    (1, 1)/sqrt(2). Pure numpy; used by `plot_front`.
    """
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    extra = np.asarray(others if others is not None else np.zeros((0, 2)), np.float64)
    allp = np.concatenate([pts, extra.reshape(-1, 2)], axis=0)
    span = np.ptp(allp, axis=0)
    span = np.where(span > 0, span, 1.0)
    d = pts[:, None, :] / span - allp[None, :, :] / span          # [N, N + M, 2]
    d2 = np.sum(d * d, axis=-1)                                    # [N, N + M]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(d2 > 0, 1.0 / (d2 * np.sqrt(d2)), 0.0)        # unit vector / distance^2
    push = np.sum(d * w[..., None], axis=1)                        # [N, 2]
    norm = np.hypot(push[:, 0], push[:, 1])
    default = np.array([1.0, 1.0]) / np.sqrt(2.0)
    ok = norm > 1e-9 * np.maximum(1.0, np.max(w, axis=1, initial=0.0))
    safe = np.where(ok, norm, 1.0)[:, None]
    return np.where(ok[:, None], push / safe, default)


def _align(c: float, neg: str, mid: str, pos: str) -> str:
    """Text alignment for a label offset whose direction component is c (in [-1, 1])."""
    return neg if c < -0.38 else pos if c > 0.38 else mid


def plot_front(curve_points, labels: Sequence[str],
               baselines: Optional[Mapping[str, Sequence[float]]], path, xlabel: str,
               ylabel: str, title: str, maximize: Maximize = True) -> str:
    """Trade-off plot: the head-weight curve, its Pareto front, and baseline points.

    Args:
      curve_points: [N, 2] one point per head-weight setting, in sweep order (drawn as a line
        with markers, each annotated with `labels[i]`, e.g. "w=(0.75,0.25)").
      labels: N strings.
      baselines: name -> (x, y), drawn as distinct labelled markers (may be empty/None).
      path: output PNG path (parent directories are created).
      maximize: axis orientation used to find the front (curve and baselines together).
    Returns: the path written, as str.
    """
    import pathlib

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = np.asarray(curve_points, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"plot_front: curve_points must be [N, 2], got shape {pts.shape}")
    if len(labels) != len(pts):
        raise ValueError(f"plot_front: {len(labels)} labels for {len(pts)} points")
    baselines = dict(baselines or {})
    base = np.asarray(list(baselines.values()), np.float64).reshape(-1, 2)
    everything = np.concatenate([pts, base], axis=0)
    front = pareto_front(everything, maximize)

    fig, ax = plt.subplots(figsize=(8.4, 4.8), dpi=120)
    ax.plot(pts[:, 0], pts[:, 1], "-o", color="tab:blue", label="head-weight sweep", zorder=2)
    # each label sits on the side away from its neighbours, the nearest weighing most (curve or
    # baseline)
    for (x, y), lab, (dx, dy) in zip(pts, labels, label_directions(pts, base)):
        ax.annotate(lab, (x, y), textcoords="offset points", xytext=(9 * dx, 9 * dy),
                    fontsize=8, ha=_align(dx, "right", "center", "left"),
                    va=_align(dy, "top", "center", "bottom"))
    f = everything[front]
    f = f[np.argsort(f[:, 0])]
    ax.plot(f[:, 0], f[:, 1], "--", color="black", lw=1.2, zorder=1)
    # the legend entry is the ring, visible even when the front is a single point
    ax.scatter(f[:, 0], f[:, 1], s=140, facecolors="none", edgecolors="black", lw=1.5, zorder=3,
               label=f"Pareto front ({len(f)} point{'s' if len(f) != 1 else ''})")
    markers = ["s", "^", "D", "v", "P", "X", "*", "<", ">", "h"]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"][1:]
    for i, (name, (x, y)) in enumerate(baselines.items()):
        ax.scatter([x], [y], marker=markers[i % len(markers)], s=70, color=colors[i % len(colors)],
                   label=name, zorder=4)
    ax.margins(x=0.12, y=0.1)  # room for the labels of the outermost points
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()  # outside the axes: the legend never hides a point
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", bbox_inches="tight")
    plt.close(fig)
    return str(out)
