"""Time the generation of every named benchmark (scipy RK45 reference data).

Usage: python benchmarks/bench_generate.py [NAME ...]    (default: all named benchmarks)

Prints one line per dataset: wall-clock seconds, number of integrated trajectories, shapes.
"""

from __future__ import annotations

import sys
import time

from mixerdsr.data import DataError, generate_dataset

DEFAULT = ["odebench-2", "odebench-10a", "odebench-10b", "lv", "go", "sm", "sccts"]


def main(argv: list[str]) -> int:
    names = argv or DEFAULT
    print(f"{'dataset':<14} {'seconds':>8} {'trajectories':>13}  shapes (x per split)")
    for name in names:
        t0 = time.perf_counter()
        try:
            splits, _ = generate_dataset(name)
        except DataError as err:
            if name == "sccts":
                print(f"{name:<14} {'skipped':>8}  ({err})")
                continue
            raise
        dt = time.perf_counter() - t0
        n_traj = sum(d.n_envs * d.n_trajectories for d in splits.values())
        shapes = ", ".join(f"{k} {tuple(d.x.shape)}" for k, d in splits.items())
        print(f"{name:<14} {dt:>8.2f} {n_traj:>13}  {shapes}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
