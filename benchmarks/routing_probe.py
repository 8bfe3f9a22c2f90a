"""Targeted probes behind docs/routing.md (print figures; nothing is written).

    python benchmarks/routing_probe.py seed-purity   # clustering of a shared expert's contexts vs warm-up length
    python benchmarks/routing_probe.py pairing       # expert changes caused by the greedy pairing after seeding
    python benchmarks/routing_probe.py m1-contexts   # K-means on a trained MixER-1's contexts vs the families
    python benchmarks/routing_probe.py seed-methods --data odebench-10b --seed 1 --set train.env_weight_power=0.5
        # clustering methods on the warm-up's contexts (Table 3's cpu cell), against the families

Both train MixER-10 (GEPS) on ODEBench-10A with every env on one expert (``gate.warm_start.warmup``), one
gate update per inner loop, seed 0.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np


def _setup(warmup: int, pairing: str = "greedy"):
    from mixerdsr import load_config
    from mixerdsr.data import resolve_dataset
    from mixerdsr.training import init_state, make_outer_step, prepare_training

    over = {"gate.every": 12, "gate.router": "warm_start", "gate.warm_start.warmup": warmup, "gate.pairing": pairing}
    over["train.outer_steps"] = 300
    cfg = load_config("odebench-10a", None, over)
    splits, _ = resolve_dataset(cfg.data.source, None, progress=False)
    tr = splits["train"].stride_time(cfg.data.time_stride)
    data = prepare_training(cfg, splits["train"]).data
    return cfg, tr, data, init_state(cfg, tr.n_envs, tr.n_dims), make_outer_step(cfg, tr.n_envs)


def seed_purity(steps: int = 100) -> None:
    from mixerdsr import routing as gating
    from mixerdsr import metrics as M

    cfg, tr, data, st, step = _setup(steps)
    n = cfg.model.num_experts
    for s in range(steps):
        st, info = step(st, data)
        if (s + 1) % 10 == 0:
            own = jnp.asarray(np.asarray(st.contexts).reshape(tr.n_envs, n, -1)[:, 0])
            a = np.asarray(gating.seed_routes(jax.random.PRNGKey(s), own, n, cfg.gate.warm_start.restarts)[0])
            print(
                f"after {s + 1:3d} warm-up steps: seeded purity {M.purity(a, tr.family):.2f} "
                f"ARI {M.adjusted_rand_index(a, tr.family):.2f}",
                flush=True,
            )


def pairing(warmup: int = 20, after: int = 3) -> None:
    from mixerdsr.inference import routes
    from mixerdsr.routing import policy_of
    from mixerdsr.training import expert_losses

    for mode in ("greedy", "overlap"):
        cfg, tr, data, st, step = _setup(warmup, mode)
        for _ in range(warmup):
            st, _ = step(st, data)
        st, a, _ = policy_of(cfg).seed_routes(st)
        a = np.asarray(a)
        losses = np.asarray(expert_losses(st.model, st.contexts, data, cfg.solver, chunk=10))
        own = np.median(losses[a, np.arange(len(a))])
        anyone = np.median(losses)
        print(f"[{mode}] after seeding: median loss under the env's own expert {own:.4g}, any expert {anyone:.4g}")
        prev = np.asarray(routes(st.model, st.contexts))
        for k in range(after):
            st, _ = step(st, data)
            r = np.asarray(routes(st.model, st.contexts))
            print(f"[{mode}] outer step {warmup + k}: {int(np.sum(r != prev))} of {len(r)} envs changed expert")
            prev = r


def m1_contexts(steps: int = 100, context_size: int = 4) -> None:
    """MixER-1 (all 50 envs per batch) on ODEBench-10A, then K-means (10 clusters, 20 k-means++
    restarts, standardised contexts) on its contexts, scored against the families."""
    from mixerdsr import routing as gating
    from mixerdsr import metrics as M
    from mixerdsr import load_config, train
    from mixerdsr.data import resolve_dataset

    over = {"model.num_experts": 1, "model.context_size": context_size, "train.outer_steps": steps, "gate.every": 12}
    cfg = load_config("odebench-10a", None, over)
    splits, _ = resolve_dataset(cfg.data.source, None, progress=False)
    res = train(cfg, splits["train"], progress=False, log=lambda s: None)
    fam = splits["train"].family
    assign, _ = gating.seed_routes(jax.random.PRNGKey(0), res.state.contexts, 10, restarts=20)
    a = np.asarray(assign)
    print(
        f"MixER-1, d_ctx {context_size}, {steps} outer steps: K-means on its contexts vs the families: "
        f"ARI {M.adjusted_rand_index(a, fam):.2f}, purity {M.purity(a, fam):.2f}"
    )


def _clusterings(z: np.ndarray, k: int, key) -> dict[str, np.ndarray]:
    """Cluster labels of the standardised points ``z [E, d]`` into ``k`` groups, by method."""
    from sklearn.cluster import AgglomerativeClustering, KMeans, SpectralClustering
    from sklearn.mixture import GaussianMixture

    from mixerdsr import routing as gating

    out = {
        "L1 k-means, 10 restarts (seed_routes)": np.asarray(gating.seed_routes(key, jnp.asarray(z), k, 10)[0]),
        "L1 k-means, 200 restarts": np.asarray(gating.seed_routes(key, jnp.asarray(z), k, 200)[0]),
        "L2 k-means, 50 restarts": KMeans(k, n_init=50, random_state=0).fit_predict(z),
        "Gaussian mixture (full), 10 restarts": GaussianMixture(k, n_init=10, random_state=0).fit(z).predict(z),
    }
    for link in ("ward", "average", "complete", "single"):
        out[f"agglomerative {link}"] = AgglomerativeClustering(k, linkage=link).fit_predict(z)
    for nn in (8, 15):
        sc = SpectralClustering(k, affinity="nearest_neighbors", n_neighbors=nn, random_state=0)
        out[f"spectral, {nn} neighbours"] = sc.fit_predict(z)
    for nn in (0, 8, 15):
        a = gating.seed_routes(key, jnp.asarray(z), k, 10, method="spectral", neighbours=nn)[0]
        out[f"spectral (seed_routes), {nn or 'auto'} neighbours"] = np.asarray(a)
    return out


def seed_methods(data: str, seed: int, sets: list[str], table: str = "table3", backbone: str = "geps") -> None:
    """Train a table's ``cpu`` cell (MixER-M, ``backbone``) to the end of its warm-up, then cluster the
    shared expert's contexts by several methods and score each against the families. The
    contexts are saved to ``runs/probes/seed-contexts/`` (re-scored without training when
    present)."""
    from pathlib import Path

    from mixerdsr import load_config
    from mixerdsr import metrics as M
    from mixerdsr import reproduce as R
    from mixerdsr.cli import parse_sets
    from mixerdsr.data import resolve_dataset
    from mixerdsr.routing import policy_of
    from mixerdsr.training import init_state, make_outer_step, prepare_training

    over = R.settings(R.Cell(table, data, backbone, "mixer-M", seed), "cpu") | parse_sets(sets)
    cfg = load_config(R.preset_of(data), None, over)
    warm = policy_of(cfg).gate_from()
    tag = "-".join(s.replace("=", "") for s in sets) or "default"
    path = Path("runs/probes/seed-contexts") / f"{data}{'' if backbone == 'geps' else '-' + backbone}-s{seed}-{tag}.npz"
    splits, _ = resolve_dataset(cfg.data.source, None, progress=False)
    tr = splits["train"].stride_time(cfg.data.time_stride)
    if path.exists():
        own = np.load(path)["own"]
    else:
        td = prepare_training(cfg, splits["train"]).data
        st, step = init_state(cfg, tr.n_envs, tr.n_dims), make_outer_step(cfg, tr.n_envs)
        for _ in range(warm):
            st, _ = step(st, td)
        own = np.asarray(st.contexts).reshape(tr.n_envs, cfg.model.num_experts, -1)[:, 0]
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, own=own, family=tr.family)
    z = (own - own.mean(0)) / np.maximum(own.std(0), 1e-12)
    k = cfg.model.num_experts
    print(f"{data} {backbone} seed {seed} {tag}: {warm} warm-up steps, contexts {own.shape}, {k} groups")
    for name, a in _clusterings(z, k, jax.random.fold_in(jax.random.PRNGKey(seed), warm)).items():
        sizes = np.sort(np.bincount(a, minlength=k))[::-1]
        print(
            f"  {name:40s} purity {M.purity(a, tr.family):.3f} ARI {M.adjusted_rand_index(a, tr.family):.3f} "
            f"sizes {sizes.tolist()}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("probe", choices=["seed-purity", "pairing", "m1-contexts", "seed-methods"])
    ap.add_argument("--data", default="odebench-10b")
    ap.add_argument("--table", default="table3")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backbone", default="geps")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args()
    if a.probe == "seed-methods":
        seed_methods(a.data, a.seed, a.sets, a.table, a.backbone)
        return
    {"seed-purity": seed_purity, "pairing": pairing, "m1-contexts": m1_contexts}[a.probe]()


if __name__ == "__main__":
    main()
