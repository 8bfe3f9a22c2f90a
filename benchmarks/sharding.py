"""Training over 1, 2 and 4 devices: throughput and memory per device of the outer step.

For each dataset and device count: the compiled outer step's memory per device (XLA's own
accounting: arguments + outputs + temporaries - aliased, from ``memory_analysis()``), and the
seconds per outer step (compilation excluded, mean over ``--steps``) as throughput in
environment-trajectories per second (2K inner steps x batch envs x trajectories per outer
step). Devices are fake CPU devices unless a GPU is present (``XLA_FLAGS`` is set below
before JAX starts): on a 2-core CPU the devices share the cores, so throughput cannot rise
there; the memory figures are what each device of a real mesh would hold.

    python benchmarks/sharding.py [--steps 3] [--data odebench-10b synthetic-2000] [--devices 1 2 4]
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"

import argparse  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402


def synthetic(n_envs: int, n_traj: int = 4, n_times: int = 20, seed: int = 0):
    """``n_envs`` damped oscillators (exact solutions), two families by damping sign."""
    from mixerdsr import EnvData

    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 4.0, n_times)
    w = rng.uniform(0.8, 1.6, n_envs)
    k = np.where(np.arange(n_envs) % 2 == 0, 0.1, 0.4)
    a0 = rng.uniform(0.5, 1.5, (n_envs, n_traj))
    phase = rng.uniform(0, 2 * np.pi, (n_envs, n_traj))
    arg = w[:, None, None] * t[None, None, :] + phase[:, :, None]
    amp = a0[:, :, None] * np.exp(-k[:, None, None] * t[None, None, :])
    x = np.stack([amp * np.cos(arg), amp * np.sin(arg)], -1).astype(np.float32)
    return EnvData(x=x, t=np.tile(t, (n_envs, 1)).astype(np.float32), family=(np.arange(n_envs) % 2), split="train")


def case(name: str):
    """``(configuration, training split)`` of a benchmark case."""
    from mixerdsr import load_config
    from mixerdsr.data import resolve_dataset

    if name.startswith("synthetic-"):
        n = int(name.split("-")[1])
        over = {"model.num_experts": 2, "model.context_size": 4, "train.inner_steps": 4, "solver.method": "rk4"}
        return load_config(None, None, over), synthetic(n)
    cfg = load_config(name, None, {})
    splits, _ = resolve_dataset(cfg.data.source, None, progress=False)
    return cfg, splits["train"]


def measure(cfg, split, devices: int, steps: int) -> dict:
    from mixerdsr.sharding import using_devices
    from mixerdsr.training import init_state, make_outer_step, prepare_training

    cfg = cfg.override({"train.devices": devices})
    with using_devices(devices):
        inputs = prepare_training(cfg, split)
        st, step = init_state(cfg, inputs.n_envs, inputs.n_dims), make_outer_step(cfg, inputs.n_envs)
        mem = step.lower(st, inputs.data).compile().compiled.memory_analysis()
        st, _ = step(st, inputs.data)  # compilation
        jax.block_until_ready(st.contexts)
        t0 = time.perf_counter()
        for _ in range(steps):
            st, _ = step(st, inputs.data)
        jax.block_until_ready(st.contexts)
        sec = (time.perf_counter() - t0) / steps
    batch = min(cfg.train.batch_envs or max(1, inputs.n_envs // cfg.model.num_experts), inputs.n_envs)
    n_traj = inputs.data.x.shape[1]
    peak = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes
    return {
        "seconds": sec,
        "traj_per_s": 2 * cfg.train.inner_steps * batch * n_traj / sec,
        "data_mib": mem.argument_size_in_bytes / 2**20,
        "peak_mib": peak / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--data", nargs="+", default=["odebench-10b", "synthetic-2000"])
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args()
    print(f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s)")
    print(f"{'data':<16} {'devices':>7} {'s/step':>8} {'env-traj/s':>11} {'args MiB/dev':>13} {'peak MiB/dev':>13}")
    for name in args.data:
        cfg, split = case(name)
        for d in args.devices:
            r = measure(cfg, split, d, args.steps)
            print(
                f"{name:<16} {d:>7} {r['seconds']:>8.3f} {r['traj_per_s']:>11.0f} {r['data_mib']:>13.2f} "
                f"{r['peak_mib']:>13.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
