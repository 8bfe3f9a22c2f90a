"""Build and measure the pretrained models shipped in ``src/mixerdsr/pretrained/``.

    # 1. train (the command is stored in the model card)
    mixerdsr run --preset odebench-10b --set gate.every=12 --set solver.method=rk4 --set solver.substeps=2 \\
        --seed 0 --out runs/pretrained/odebench-10b-geps-rk4
    # 2. package the run's selected model with its card
    python benchmarks/pretrained.py package runs/pretrained/odebench-10b-geps-rk4 --name odebench-10b \\
        --command "mixerdsr run --preset odebench-10b --set gate.every=12 --set solver.method=rk4 ..."
    # 3. measure: adaptation accuracy on the 10B adaptation split, timing, out-of-family data,
    #    training from scratch on the single trajectory (one JSON each under docs/results/pretrained/)
    python benchmarks/pretrained.py measure odebench-10b

The card also stores a *check*: a few adaptation environments (their one trajectory and two
test trajectories), the adaptation protocol and the forecast relMSE it gave, so the test suite
can tell when a code change silently breaks old weights.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src" / "mixerdsr" / "pretrained"
RESULTS = ROOT / "docs" / "results" / "pretrained"
#: the check stored in the card: these envs of the adaptation split, this protocol
CHECK_ENVS = (0, 24)
CHECK = {"steps": 20, "screen_steps": 10, "keep": 1, "test_trajectories": 2}
#: adaptation settings stored with the shipped model (its training used the preset's)
ADAPT = {"adapt.steps": 150, "adapt.screen_steps": 25, "adapt.keep": 2}


def _machine() -> str:
    return f"{platform.node() or 'unknown'} {platform.machine()}, {platform.processor() or 'cpu'}"


def package(run: Path, name: str, command: str) -> None:
    from dataclasses import replace

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from adaptation import trained_of_run

    from mixerdsr.data import load_dataset, read_meta
    from mixerdsr.models import save_model

    tm = trained_of_run(run)
    # `mixerdsr adapt` defaults for the shipped model (docs/adaptation.md: speed vs accuracy)
    tm = replace(tm, config=tm.config.override(ADAPT))
    metrics = json.loads((run / "metrics.json").read_text())
    splits = load_dataset(run / "data.npz")
    meta = read_meta(run / "data.npz")
    stride = tm.config.data.time_stride
    ad = splits["adapt_train"].stride_time(stride).select_envs(list(CHECK_ENVS))
    te = splits["adapt_test"].select_envs(list(CHECK_ENVS))
    n = CHECK["test_trajectories"]
    x_test, t_test = te.x[:, :n].astype(np.float32), te.t.astype(np.float32)
    card: dict = {
        "name": name,
        "description": f"MixER-{tm.model.n_experts} ({tm.config.model.backbone.upper()} experts) trained on "
        f"{meta.get('name')}: {meta.get('description', '')}",
        "data": meta.get("name"),
        "protocol": meta.get("protocol"),
        "backbone": tm.config.model.backbone,
        "experts": tm.model.n_experts,
        "seed": tm.config.train.seed,
        "command": command,
        "adapt_settings": ADAPT,
        "time_stride": stride,
        "dt": float(np.median(np.diff(splits["train"].t[0]))) * stride,
        "training_seconds": metrics["timing"].get("total_seconds"),
        "run_seconds": metrics["timing"].get("run_seconds"),
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%d"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
        "metrics": {
            "test_rel_mse": metrics["test"]["rel_mse"],
            "test_mse": metrics["test"]["mse"],
            "test_tprmse": metrics["test"]["tprmse"],
            "best_step": metrics.get("best_step"),
            "purity": metrics["routing"]["purity"],
            "ari": metrics["routing"]["ari"],
            "counts": metrics["routing"]["counts"],
        },
        "check": {
            **CHECK,
            "envs": list(CHECK_ENVS),
            "x": ad.x.astype(np.float32).round(6).tolist(),
            "t": ad.t.astype(np.float32).round(6).tolist(),
            "x_test": x_test.round(6).tolist(),
            "t_test": t_test.round(6).tolist(),
        },
    }
    from mixerdsr.models import card_check

    card["check"]["rel_mse"] = [0.0] * len(CHECK_ENVS)
    expected = card_check(replace(tm, card=card))[1]
    card["check"]["rel_mse"] = expected
    SHIPPED.mkdir(parents=True, exist_ok=True)
    path = save_model(SHIPPED / f"{name}.npz", replace(tm, card=card))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB); check relMSE {expected}")


def _adapt_cli(model: str, data: Path, out: Path, extra: list[str]) -> tuple[dict, float]:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "mixerdsr", "adapt", "--model", model, "--data", str(data), "--out", str(out), *extra]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads((out / "metrics.json").read_text()), time.perf_counter() - t0


def measure(name: str, from_scratch: bool) -> None:
    from mixerdsr.data import generate_dataset, save_dataset
    from mixerdsr.models import load_pretrained

    RESULTS.mkdir(parents=True, exist_ok=True)
    tm = load_pretrained(name)
    work = ROOT / "runs" / "pretrained-measure"
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"{tm.card['data']}.npz"
    if not data.exists():
        save_dataset(data, *generate_dataset(tm.card["data"], None, progress=False))
    # adaptation split: first call (cold compilation cache), second call (warm)
    cache = work / "jax-cache"
    import os
    import shutil

    shutil.rmtree(cache, ignore_errors=True)
    os.environ["MIXERDSR_CACHE_DIR"] = str(cache)
    m1, first = _adapt_cli(name, data, work / "adapt-1", [])
    m2, second = _adapt_cli(name, data, work / "adapt-2", [])
    envs = m2["environments"]
    fam = np.array([r["family"] for r in envs])
    by_route = np.array([r["family_by_route"] for r in envs])
    by_ctx = np.array([r["family_by_context"] for r in envs])
    f = m2["forecast"]
    out = {
        "model": name,
        "data": tm.card["data"],
        "split": "adapt_train -> adapt_test",
        "adapt_rel_mse": f["rel_mse"],
        "adapt_mse": f["mse"],
        "adapt_tprmse": f["tprmse"],
        "per_env_rel_mse": f["per_env_rel_mse"],
        "family_by_route": float(np.mean(by_route == fam)),
        "family_by_context": float(np.mean(by_ctx == fam)),
        "trusted": int(sum(r["trusted"] for r in envs)),
        "n_envs": len(envs),
        "confidence": [round(r["confidence"], 3) for r in envs],
        "first_call_seconds": first,
        "second_call_seconds": second,
        "fit_seconds": [m1["timing"]["fit_seconds"], m2["timing"]["fit_seconds"]],
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    (RESULTS / f"{name}-adapt.json").write_text(json.dumps(out, indent=1))
    print(
        f"{name}: adapt relMSE {f['rel_mse']:.3f} TPRMSE {f['tprmse']:.1f}%  family by route {out['family_by_route']:.2f} "
        f"by context {out['family_by_context']:.2f}  trusted {out['trusted']}/{len(envs)}  "
        f"first call {first:.1f} s, second {second:.1f} s"
    )
    # a 2-D system from none of the families: Lotka-Volterra
    lv = work / "lv.npz"
    if not lv.exists():
        save_dataset(lv, *generate_dataset("lv", None, progress=False))
    m3, secs = _adapt_cli(name, lv, work / "adapt-lv", ["--time-stride", "1"])
    envs = m3["environments"]
    ood = {
        "model": name,
        "data": "lv",
        "adapt_rel_mse": m3.get("forecast", {}).get("rel_mse"),
        "confidence": [round(r["confidence"], 3) for r in envs],
        "fit_rel_loss": [round(r["fit_rel_loss"], 4) for r in envs],
        "context_distance": [round(r["context_distance"], 2) for r in envs],
        "trusted": int(sum(r["trusted"] for r in envs)),
        "n_envs": len(envs),
        "warnings": m3["warnings"],
        "seconds": secs,
        "date": time.strftime("%Y-%m-%d"),
    }
    (RESULTS / f"{name}-lv.json").write_text(json.dumps(ood, indent=1))
    print(f"{name} on Lotka-Volterra: trusted {ood['trusted']}/{len(envs)}, adapt relMSE {ood['adapt_rel_mse']}")
    if from_scratch:
        scratch(tm, data)


def scratch_only(name: str) -> None:
    from mixerdsr.models import load_pretrained

    tm = load_pretrained(name)
    scratch(tm, ROOT / "runs" / "pretrained-measure" / f"{tm.card['data']}.npz")


def scratch(tm, data: Path, envs_per_family: int = 1, outer_steps: int = 300) -> None:
    """Training from scratch on the single adaptation trajectory of one env per family
    (a MixER-1 of the same backbone and width), forecasting that env's test trajectories."""
    import dataclasses

    from mixerdsr import metrics as M
    from mixerdsr import train
    from mixerdsr.data import load_dataset
    from mixerdsr.inference import predict

    import jax

    jax.config.update("jax_compilation_cache_dir", str(ROOT / "runs" / "pretrained-measure" / "jax-cache-scratch"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    splits = load_dataset(data)
    ad, te = splits["adapt_train"], splits["adapt_test"]
    pick = [int(np.flatnonzero(ad.family == f)[0]) for f in np.unique(ad.family)][: 10 * envs_per_family]
    cfg = tm.config.override(
        {
            "model.num_experts": 1,
            "model.context_size": 2,
            "gate.router": "from_start",
            "train.outer_steps": outer_steps,
            "train.batch_envs": 1,
            "data.val_trajectories": 0,
        }
    )
    rows = []
    for e in pick:
        t0 = time.perf_counter()
        one = ad.select_envs([e])
        res = train(cfg, one, progress=False, log=lambda s: None)
        tt = te.select_envs([e])
        pred, _ = predict(res.model, res.contexts, tt.x.astype(np.float32), tt.t.astype(np.float32), cfg.solver)
        import jax.numpy as jnp

        rel = float(M.rel_mse(jnp.asarray(pred), jnp.asarray(tt.x, jnp.float32)))
        rows.append({"env": e, "family": int(ad.family[e]), "rel_mse": rel, "seconds": time.perf_counter() - t0})
        print(f"from scratch env {e} (family {int(ad.family[e])}): relMSE {rel:.3f}")
    out = {
        "model": "from scratch (MixER-1, one trajectory)",
        "settings": {k: v for k, v in cfg.flat().items() if k.startswith(("model.", "train."))},
        "envs": rows,
        "mean_rel_mse": float(np.mean([r["rel_mse"] for r in rows])),
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    _ = dataclasses
    (RESULTS / f"{tm.card['data']}-{tm.config.model.backbone}-scratch.json").write_text(json.dumps(out, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("package")
    p.add_argument("run", type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--command", required=True)
    q = sub.add_parser("measure")
    q.add_argument("name")
    q.add_argument("--from-scratch", action="store_true")
    r = sub.add_parser("scratch")
    r.add_argument("name")
    args = ap.parse_args()
    if args.cmd == "package":
        package(args.run, args.name, args.command)
    elif args.cmd == "scratch":
        scratch_only(args.name)
    else:
        measure(args.name, args.from_scratch)


if __name__ == "__main__":
    main()
