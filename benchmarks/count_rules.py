"""Rules for the number of experts (``--experts auto``), judged offline on the contexts a warm
start grouped (``seeding-S.npz``, written by every warm-start run).

    python benchmarks/count_rules.py runs/seeding/*/seeding-*.npz [--max 10] [--neighbours 5 4 3]

A seeding file comes from any warm-start run, e.g. the first W outer steps of `--experts auto`
as a user runs it: ``mixerdsr run --data SET.npz --experts auto:10 --seed S --set
gate.warm_start.warmup=W --out DIR`` stopped once ``DIR/seeding-W.npz`` is written (nothing
before the seeding depends on the rest of the run).

For every file: the number of families (the truth), and per rule the count chosen and the
purity of the groups it forms against the families. Rules:

- ``silhouette``: the library's (:func:`mixerdsr.routing.choose_count`: the highest mean
  silhouette of L1 K-means on the standardised contexts, at least 0.5, the largest count within
  0.1 of the best);
- ``silhouette-spectral``: the same score of the groups the spectral method forms;
- ``eigengap``: :func:`mixerdsr.routing.eigengap_count` (the largest gap between consecutive
  eigenvalues of the normalised Laplacian of the nearest-neighbour graph: ``k`` clean groups
  give ``k`` eigenvalues near 0), the groups formed by the spectral method;
- ``eigengap-nbK`` (``--neighbours K ...``): the same count on a graph of ``K`` neighbours.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mixerdsr import metrics as M
from mixerdsr.routing import auto_neighbours, choose_count, compact_labels, eigengap_count, seed_routes, silhouette


def rules(
    x: np.ndarray, max_count: int, key: jax.Array, neighbours: tuple[int, ...] = ()
) -> dict[str, tuple[int, np.ndarray]]:
    out = {}
    k, assign, _ = choose_count(key, jnp.asarray(x), max_count, 0.5, 10, 0.1)
    out["silhouette"] = (k, np.asarray(assign))
    best, best_k, best_a = -np.inf, 1, np.zeros(len(x), int)
    for k in range(2, min(max_count, len(x) - 1) + 1):
        a, _ = seed_routes(key, jnp.asarray(x), k, 10, method="spectral", neighbours=auto_neighbours(len(x), k))
        s = silhouette(x, np.asarray(a))
        if s > best:
            best, best_k, best_a = s, k, np.asarray(a)
    out["silhouette-spectral"] = (best_k, best_a) if best >= 0.5 else (1, np.zeros(len(x), int))
    for name, nb in [("eigengap", 0)] + [(f"eigengap-nb{n}", n) for n in neighbours]:
        k, _ = eigengap_count(x, max_count, nb)
        a = (
            seed_routes(key, jnp.asarray(x), k, 10, method="spectral", neighbours=auto_neighbours(len(x), k))[0]
            if k > 1
            else np.zeros(len(x), int)
        )
        out[name] = (k, np.asarray(compact_labels(a)[1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--max", type=int, default=10, help="the most experts a rule may choose")
    ap.add_argument("--neighbours", type=int, nargs="*", default=[], help="eigengap counts on these graphs too")
    a = ap.parse_args()
    key = jax.random.PRNGKey(0)
    names = ["silhouette", "silhouette-spectral", "eigengap", *(f"eigengap-nb{n}" for n in a.neighbours)]
    print("| seeding file | families | " + " | ".join(f"{r} (count, purity)" for r in names) + " |")
    print("|---" * (len(names) + 2) + "|")
    for f in a.files:
        d = np.load(f)
        x, fam = np.asarray(d["contexts"], np.float64), np.asarray(d["family"])
        n_fam = len(np.unique(fam[fam >= 0]))
        res = rules(x, a.max, key, tuple(a.neighbours))
        cells = [f"{k}, {M.purity(np.asarray(assign), fam):.2f}" for k, assign in res.values()]
        print(f"| {Path(f).parent.name}/{Path(f).name} | {n_fam} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
