"""Long-term statistics of trivial forecasts on the Chaos-3 test split, the floor a model must beat.

For every test environment the forecast is:

- "training mean": the environment's mean training state, held constant;
- "same family, other env": another environment's data of the same family (the statistics of
  a neighbouring attractor);
- "same env, training data": the environment's own training trajectories, repeated to the test
  split's count (other trajectories of the very attractor: the floor that finite samples set
  for D_stsp and D_H; its VPT and sMAPE compare different initial conditions and mean little).

Prints D_stsp, D_H, valid prediction time and sMAPE, means over environments as
``metrics.json`` reports them.

    python benchmarks/chaos_baseline.py [DATA.npz]     (default: the built-in chaos dataset)
"""

from __future__ import annotations

import sys

import numpy as np


def _stats(y: np.ndarray, p: np.ndarray, t: np.ndarray) -> tuple[float, float, float, float]:
    from mixerdsr import metrics as M

    return (
        M.state_space_divergence(y, p),
        M.power_spectrum_distance(y, p),
        M.valid_prediction_time(y, p, t),
        M.smape(y, p),
    )


def main() -> None:
    import mixerdsr as mx

    splits = mx.load_dataset(sys.argv[1]) if len(sys.argv) > 1 else mx.generate_dataset("chaos")[0]
    tr, te = splits["train"], splits["test"]
    rows: dict[str, list[tuple[float, ...]]] = {
        "training mean": [],
        "same family, other env": [],
        "same env, training data": [],
    }
    for e in range(te.n_envs):
        y = te.x[e, :, 1:]
        mean = tr.x[e].reshape(-1, tr.n_dims).mean(0)
        rows["training mean"].append(_stats(y, np.broadcast_to(mean, y.shape), te.t[e, 1:]))
        same = np.flatnonzero(te.family == te.family[e])
        other = same[(np.flatnonzero(same == e)[0] + 1) % len(same)]
        rows["same family, other env"].append(_stats(y, te.x[other, :, 1:], te.t[e, 1:]))
        own = np.resize(tr.x[e, :, 1:], y.shape)  # the training trajectories, repeated to the test count
        rows["same env, training data"].append(_stats(y, own, te.t[e, 1:]))
    print(f"{'forecast':26s} {'D_stsp':>8s} {'D_H':>6s} {'VPT':>6s} {'sMAPE':>6s}")
    for name, r in rows.items():
        d, h, v, s = np.mean(np.asarray(r), axis=0)
        print(f"{name:26s} {d:8.3g} {h:6.3f} {v:6.3g} {s:6.1f}")


if __name__ == "__main__":
    main()
