"""Where a MixER-3 outer step's time goes, against one expert's at the same active count.

Table 4's ``converged`` cells (the paper's active parameter counts, full batches, the gate
updated once per inner loop), each configuration in its own process, timed as
``benchmarks/table4_speed.py`` times them (step 0 holds compilation; seconds per outer step are
the mean of steps 1..N-1, ``jax.block_until_ready`` after each):

- ``single``: the single meta-learner's cell (one expert);
- ``mixer``: the MixER-3 cell as the harness trains it;
- ``mixer-nogate``: the same with no gate update inside the outer step (``gate.every = 1000``),
  so the difference to ``mixer`` is the gate's all-expert loss pass.

At initialisation the experts are identical copies (the paper's same initialisation), so the
adaptive solver takes as many steps for every expert, and ``single`` against ``mixer-nogate``
is the cost of routing itself.

    python benchmarks/mixer_step.py [--only lv-coda lv-ncf sm-coda] [--steps 6] [--configs ...]

Measured figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table4_speed import _spawn  # noqa: E402

CELLS = ("lv-coda", "lv-ncf", "sm-coda")
#: configuration -> (Table 4 variant, settings on top of the cell's)
CONFIGS: dict[str, tuple[str, dict]] = {
    "single": ("single", {}),
    "mixer": ("mixer-M", {}),
    "mixer-nogate": ("mixer-M", {"gate.every": 1000}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=CELLS, default=list(CELLS))
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--steps", type=int, default=6, help="outer steps per configuration (step 0 = compile)")
    args = ap.parse_args()
    print(f"{'cell':8s} {'config':13s} {'params':>8s} {'compile s':>9s} {'s/outer step':>14s} {'x single':>9s}")
    for cell in args.only:
        base = None
        for name in args.configs:
            variant, extra = CONFIGS[name]
            spec = {"cell": cell, "solver": "tsit5", "steps": args.steps, "shape": "published"}
            r = _spawn(spec | {"variant": variant, "extra": extra})
            s = r["seconds_per_outer_step"]
            base = s if name == "single" else base
            ratio = f"{s / base:9.2f}" if base else f"{'-':>9s}"
            print(
                f"{cell:8s} {name:13s} {r['active_parameters']:8,d} {r['compile_seconds']:9.1f} "
                f"{s:8.2f}±{r['std']:.2f} {ratio}",
                flush=True,
            )


if __name__ == "__main__":
    main()
