"""Expert choice when adapting to new environments: lowest fitting loss vs held-out forecast.

For each finished run directory, adapts its dataset's ``adapt_train`` environments with

- ``loop``: the runs' adaptation (``adapt.init = "experts"``: one fit per start, the lowest final
  loss on the adaptation data kept);
- ``loss``: :func:`mixerdsr.adaptation.adapt_new`: every start screened for a few steps, the
  best two experts' fits refined, the lowest loss kept.

(A third rule, ``holdout``, chose on the forecast of the held-out second half of the trajectory;
it chose worse on ODEBench-10B and 10A and was removed; its JSON files came from commit c5b5922.)

and prints, per method: how often a new environment goes to its family's expert (the expert
most of that family's training environments use), the adaptation relMSE on ``adapt_test``,
and the seconds. One JSON per (run, method) under ``docs/results/adaptation/``.

    python benchmarks/adaptation.py runs/routing/odebench-10b-geps-warm-beta1-s0 --steps 200
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "adaptation"


def trained_of_run(run: Path):
    """The run's model (its ``model.npz``; runs finished before model files existed are
    converted from ``checkpoint.npz`` + ``data.npz`` once)."""
    from mixerdsr import Config
    from mixerdsr.checkpoint import load_checkpoint, read_checkpoint_config
    from mixerdsr.data import load_dataset, read_meta
    from mixerdsr.models import MODEL_FILE, TrainedModel, load_model, save_model
    from mixerdsr.training import init_state

    if not (run / MODEL_FILE).exists():
        splits = load_dataset(run / "data.npz")
        tr = splits["train"]
        cfg = Config.from_dict(read_checkpoint_config(run / "checkpoint.npz")[0])
        st, _, _ = load_checkpoint(run / "checkpoint.npz", init_state(cfg, tr.n_envs, tr.n_dims))
        meta = read_meta(run / "data.npz")
        metrics = json.loads((run / "metrics.json").read_text())
        card = {"data": meta.get("name"), "metrics": {k: metrics.get(k) for k in ("test", "adapt_test", "routing")}}
        names = list(tr.family_names or [])
        save_model(
            run / MODEL_FILE, TrainedModel(st.best_model, st.best_contexts, cfg, tr.n_dims, tr.family, names, card)
        )
    return load_model(run)


def family_experts(tm) -> dict[int, int]:
    r = tm.routes
    return {int(f): int(np.bincount(r[tm.family == f]).argmax()) for f in np.unique(tm.family)}


def report() -> None:
    """Markdown table from the JSON files: per run group (the run name without its seed) and
    method, mean and spread over seeds."""
    import re
    from collections import defaultdict

    groups: dict = defaultdict(list)
    for f in sorted(RESULTS.glob("*.json")):
        d = json.loads(f.read_text())
        m = re.match(r"(.*)-s(\d+)$", d["run"])
        group = m.group(1) if m else d["run"]
        groups[(group, d["method"])].append(d)
    print("| runs | method | seeds | new envs on their family's expert | adapt relMSE | adapt TPRMSE % | s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (group, method), rows in sorted(groups.items()):
        def ms(k, fmt):
            v = np.array([r[k] for r in rows], float)
            return format(v.mean(), fmt) + (f" ± {format(v.std(), fmt)}" if len(v) > 1 else "")

        print(
            f"| {group} | {method} | {len(rows)} | {ms('to_family_expert', '.2f')} | {ms('adapt_rel_mse', '.3f')} "
            f"| {ms('adapt_tprmse', '.0f')} | {ms('seconds', '.0f')} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--report", action="store_true", help="print the table from the JSON files")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--screen-steps", type=int, default=25)
    ap.add_argument("--keep", type=int, default=2)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--methods", nargs="+", default=["loop", "loss"], choices=["loop", "loss"])
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    if args.report:
        report()
        return
    from mixerdsr.adaptation import adapt_contexts, adapt_new, expert_starts
    from mixerdsr.rollout import env_losses
    from mixerdsr.data import load_dataset
    from mixerdsr.evaluation import evaluate_split
    from mixerdsr.inference import routes

    RESULTS.mkdir(parents=True, exist_ok=True)
    for run in args.runs:
        tm = trained_of_run(run)
        cfg = tm.config
        splits = load_dataset(run / "data.npz")
        ad = splits["adapt_train"].stride_time(cfg.data.time_stride)
        target = splits.get("adapt_test", splits["adapt_train"])
        fam_exp = family_experts(tm)
        x, t = jnp.asarray(ad.x, jnp.float32), jnp.asarray(ad.t, jnp.float32)
        for method in args.methods:
            t0 = time.perf_counter()
            extra: dict = {}
            if method == "loop":  # the runs' adaptation before adapt_new: a full fit per start
                fits = [
                    adapt_contexts(
                        tm.model, x, t, steps=args.steps, lr=cfg.adapt.lr, solver=cfg.solver,
                        init=jnp.broadcast_to(s, (x.shape[0], s.shape[0])),
                    )[0]
                    for s in expert_starts(tm.model, tm.contexts)
                ]
                scored = (env_losses(tm.model, f, x, t, cfg.solver) for f in fits)
                final = np.stack([np.where(np.asarray(ok), np.asarray(ls), np.inf) for ls, ok in scored])
                ctx = jnp.stack(fits)[jnp.asarray(final.argmin(0)), jnp.arange(x.shape[0])]
                ex = np.asarray(routes(tm.model, ctx))
            else:
                a = adapt_new(
                    tm.model,
                    tm.contexts,
                    x,
                    t,
                    steps=args.steps,
                    lr=args.lr or cfg.adapt.lr,
                    screen_steps=args.screen_steps,
                    keep=args.keep,
                    solver=cfg.solver,
                    alpha=cfg.train.teacher_forcing,
                    context_penalty=cfg.adapt.context_penalty,
                )
                ctx, ex = a.contexts, a.experts
                extra = {
                    "runner_up": a.runner_up.tolist(),
                    "confidence": a.confidence.round(3).tolist(),
                    "rel_loss": a.rel_loss.round(4).tolist(),
                }
            secs = time.perf_counter() - t0
            m, _ = evaluate_split(tm.model, ctx, target, cfg)
            want = np.array([fam_exp.get(int(f), -1) for f in ad.family])
            hit = float(np.mean(ex == want))
            out = {
                "run": run.name,
                "method": method + args.tag,
                "steps": args.steps,
                "screen_steps": args.screen_steps,
                "keep": args.keep,
                "lr": args.lr or cfg.adapt.lr,
                "to_family_expert": hit,
                "adapt_rel_mse": m["rel_mse"],
                "adapt_tprmse": m["tprmse"],
                "adapt_mse": m["mse"],
                "per_env_rel_mse": m["per_env_rel_mse"],
                "experts": ex.tolist(),
                "family_experts": want.tolist(),
                "seconds": secs,
                "machine": f"{platform.node() or 'unknown'} {platform.machine()}",
                "date": time.strftime("%Y-%m-%d"),
                **extra,
            }
            (RESULTS / f"{run.name}-{method}{args.tag}.json").write_text(json.dumps(out, indent=1))
            print(
                f"{run.name} {method}{args.tag}: to family expert {hit:.2f}, adapt relMSE {m['rel_mse']:.3f}, "
                f"TPRMSE {m['tprmse']:.1f}, {secs:.1f} s"
            )


if __name__ == "__main__":
    main()
