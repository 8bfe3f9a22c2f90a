"""Seconds per outer step of the gate schedules of ``mixerdsr reproduce gate``, measured alone.

The gate table's cells record their own seconds per outer step, but they ran beside other jobs
on a shared machine. This script times the same settings (the table's ``cpu`` cells: the
dataset's preset, ``gate.every`` = 1, 4 or 12) one after another in one process: the gate
updating from the first step (``gate.router = "from_start"``, i.e. the cost after a warm-up), compilation
excluded (the first outer step), the mean over ``--steps`` outer steps. Run it on an otherwise
idle machine and report the ratios.

    python benchmarks/gate_schedule.py [--steps 10] [--data odebench-2 odebench-10a] [--backbones geps coda]
"""

from __future__ import annotations

import argparse
import time

import jax


def time_cell(data: str, backbone: str, every: int, steps: int) -> float:
    from mixerdsr import load_config
    from mixerdsr import reproduce as R
    from mixerdsr.data import resolve_dataset
    from mixerdsr.training import init_state, make_outer_step, prepare_training

    over = R.settings(R.Cell("gate", data, backbone, f"every-{every}", 0), "cpu") | {"gate.router": "from_start"}
    cfg = load_config(R.preset_of(data), None, over)
    splits, _ = resolve_dataset(cfg.data.source, None, progress=False)
    inputs = prepare_training(cfg, splits["train"])
    td = inputs.data
    st, step = init_state(cfg, inputs.n_envs, inputs.n_dims), make_outer_step(cfg, inputs.n_envs)
    st, _ = step(st, td)  # compilation
    jax.block_until_ready(st.contexts)
    t0 = time.perf_counter()
    for _ in range(steps):
        st, _ = step(st, td)
    jax.block_until_ready(st.contexts)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--data", nargs="+", default=["odebench-2", "odebench-10a"])
    ap.add_argument("--backbones", nargs="+", default=["geps", "coda"])
    a = ap.parse_args()
    print("data, backbone: seconds per outer step with the gate updated every 1 / 4 / 12 inner steps")
    for data in a.data:
        for bb in a.backbones:
            secs = {k: time_cell(data, bb, k, a.steps) for k in (1, 4, 12)}
            print(
                f"{data}, {bb}: " + " / ".join(f"{secs[k]:.3f}" for k in (1, 4, 12)) + f" s  (every 1 costs "
                f"{secs[1] / secs[12]:.2f}x and every 4 {secs[4] / secs[12]:.2f}x of once per inner loop)",
                flush=True,
            )


if __name__ == "__main__":
    main()
