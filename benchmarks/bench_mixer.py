"""Training speed and memory of MixER on ODEBench-10B (the reference setting: 160 envs, M = 10).

Setting: GEPS experts, d_ctx = 40 split across the experts, batch 16 envs, K = 12 inner steps,
time stride 5 (20 time points, as the authors train). Every configuration runs in its own
process (so its peak memory is its own) from initialisation; step 0 holds compilation, and
seconds per outer step is the mean over outer steps 1..19. Prints:

- M = 10 with the gate updated after every inner step (the paper) and once per inner loop
  (``gate_every = K``: one update after the context loop, one after the weight loop), each
  with the default compilation and with ``low_memory_compile`` (XLA's CPU fusion emitters off);
- M = 1, 2, 5, 10 with both gate settings (the gate's all-expert loss pass grows with M by
  design, the routed training steps do not);
- 2x and 4x the training environments (envs tiled; M = 10, gate after every inner step);
- a trained model: after ``--train-steps`` outer steps (gate once per inner loop), the time per
  outer step of both gate settings (learned fields need more solver steps than fresh ones);
- peak memory is the process's maximum resident set (``ru_maxrss``), compilation included;
  the resident set after imports and data loading, before any model exists, is printed beside it;
- active parameters per expert (what one environment uses) at that setting, and, for
  reference, at state size 4 for every IVP backbone.

    python benchmarks/bench_mixer.py [--steps 20] [--train-steps 100] [--quick | --only experts]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _one(spec: dict) -> dict:
    """Run one configuration in this process and return its figures."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import mixerdsr as mx
    from mixerdsr.evaluation import active_parameters
    from mixerdsr.training import TrainData, init_state, make_outer_step

    train = mx.load_dataset(spec["data"])["train"]
    cfg = mx.load_config("odebench-10b", overrides={
        "model.num_experts": spec["experts"], "gate.every": spec["gate_every"], "train.batch_envs": 16,
        "train.inner_steps": 12, "data.time_stride": 5, "model.context_size": 40, "model.split_context": True,
        "train.outer_steps": max(spec["steps"], spec.get("train_steps", 0)) + 20,
        "train.low_memory_compile": spec.get("low_memory", False)})
    tr = train.stride_time(cfg.data.time_stride)
    x, t = np.asarray(tr.x, np.float32), np.asarray(tr.t, np.float32)
    if spec.get("env_mult", 1) > 1:
        x, t = np.tile(x, (spec["env_mult"], 1, 1, 1)), np.tile(t, (spec["env_mult"], 1))
    data = TrainData(jnp.asarray(x), jnp.asarray(t))
    n_envs = x.shape[0]
    base_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # imports + data, before any model
    state = init_state(cfg, n_envs, x.shape[-1])
    out: dict = {"envs": n_envs, "active_parameters": active_parameters(state.model)}

    def timed(step_fn, state, n):
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            state, info = step_fn(state, data)
            jax.block_until_ready((state.contexts, info))
            times.append(time.perf_counter() - t0)
        return state, times

    if spec.get("train_steps"):
        fast = make_outer_step(cfg.override({"gate.every": 12}), n_envs)
        state, tt = timed(fast, state, spec["train_steps"])
        out["train_seconds"] = sum(tt)
        for g in (1, 12):
            fn = make_outer_step(cfg.override({"gate.every": g}), n_envs)
            _, times = timed(fn, state, 1 + spec["steps"])
            out[f"trained_gate_every_{g}"] = float(np.mean(times[1:]))
    else:
        step_fn = make_outer_step(cfg, n_envs)
        state, times = timed(step_fn, state, spec["steps"])
        steady = times[1:]
        out.update(first_step=times[0], compile_seconds=times[0] - float(np.median(steady)),
                   seconds_per_outer_step=float(np.mean(steady)), std=float(np.std(steady)),
                   routes=np.bincount(np.asarray(mx.routes(state.model, state.contexts)),
                                      minlength=cfg.model.num_experts).tolist())
    out["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out["base_gib"] = base_gib
    return out


def _spawn(spec: dict) -> dict:
    p = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"configuration {spec} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _param_table() -> str:
    import jax

    from mixerdsr.evaluation import active_parameters
    from mixerdsr.mixer import make_mixer

    parts = []
    for bb in ("geps", "coda", "ncf"):
        m = make_mixer(bb, 2, 4, 1, split=False, shift=True, key=jax.random.PRNGKey(0))
        parts.append(f"{bb} {active_parameters(m):,}")
    return "active parameters per expert at the ODEBench-10B setting (state size 2, context 4, incl. 1 shift): " + ", ".join(parts)


def _experts_sweep(base: dict) -> None:
    """Time per outer step for M = 1, 2, 5, 10 with both gate settings.

    The gate update needs every expert's loss on every training env (Algorithm 1), so its cost
    grows with M by design; the training steps themselves (one routed expert per env) do not.
    The gate-once-per-loop column shows the training part; the difference between the two
    columns divided by 22 is the cost of one all-expert loss pass.
    """
    print("\nexperts M     gate after every inner step     gate once per inner loop")
    for m in (1, 2, 5, 10):
        r1 = _spawn({**base, "experts": m})
        r12 = _spawn({**base, "experts": m, "gate_every": 12})
        print(f"  M = {m:2d}: {r1['seconds_per_outer_step']:8.3f} s/outer step (peak {r1['peak_gib']:.2f} GiB)"
              f"   {r12['seconds_per_outer_step']:8.3f} s/outer step (peak {r12['peak_gib']:.2f} GiB)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=20, help="outer steps per configuration (step 0 = compile)")
    ap.add_argument("--train-steps", type=int, default=100, help="outer steps before timing the trained model")
    ap.add_argument("--quick", action="store_true", help="only M = 10 with both gate settings")
    ap.add_argument("--only", choices=["experts"], help="run only this section (the experts sweep, both gate settings)")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(_one(json.loads(args.one))))
        return

    import mixerdsr as mx

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "odebench-10b.npz")
        t0 = time.perf_counter()
        splits, meta = mx.generate_dataset("odebench-10b")
        mx.save_dataset(path, splits, meta)
        print(f"ODEBench-10B generated in {time.perf_counter() - t0:.1f} s: train {splits['train'].x.shape}")
        base = dict(data=path, steps=args.steps, experts=10, gate_every=1)
        if args.only == "experts":
            _experts_sweep(base)
            return
        print("\nGEPS, M = 10, d_ctx = 40 split, batch 16, K = 12, stride 5; mean of outer steps 1..19")
        print(f"{'setting':34s} {'compile s':>9s} {'s/outer step':>12s} {'peak GiB':>8s} {'of which imports+data':>21s}"
              f"  active params/expert")
        rows = (("gate after every inner step", {}), ("gate once per inner loop", {"gate_every": 12}),
                ("every inner step, low-memory", {"low_memory": True}),
                ("once per inner loop, low-memory", {"gate_every": 12, "low_memory": True}))
        for name, over in rows:
            r = _spawn({**base, **over})
            print(f"{name:34s} {r['compile_seconds']:9.1f} {r['seconds_per_outer_step']:8.3f}±{r['std']:.2f} "
                  f"{r['peak_gib']:8.2f} {r['base_gib']:21.2f}  {r['active_parameters']:,}", flush=True)
        if args.quick:
            return
        _experts_sweep(base)
        print("\nenvironments (M = 10, gate after every inner step)")
        for k in (1, 2, 4):
            r = _spawn({**base, "env_mult": k})
            print(f"  {k}x = {r['envs']} envs: {r['seconds_per_outer_step']:.3f} s/outer step, "
                  f"peak {r['peak_gib']:.2f} GiB", flush=True)
        r = _spawn({**base, "train_steps": args.train_steps, "steps": 10})
        print(f"\ntrained model (after {args.train_steps} outer steps, {r['train_seconds']:.0f} s): "
              f"{r['trained_gate_every_1']:.3f} s/outer step with the gate after every inner step, "
              f"{r['trained_gate_every_12']:.3f} s once per inner loop")
        print("\n" + _param_table())


if __name__ == "__main__":
    main()
