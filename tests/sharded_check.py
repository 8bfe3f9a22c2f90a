"""Run by tests/test_sharding.py in a process of its own with 4 fake CPU devices (XLA reads
the device count once, at start-up): training over 1 and 4 devices, the gate's loss pass split
by experts over 3 (envs and experts padded), and a 4-device checkpoint resumed on 1 device.
Exits non-zero with the failed assertion."""

import os
import sys
from pathlib import Path

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
sys.path.insert(0, str(Path(__file__).parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from conftest import tiny_cfg, tiny_ode_split  # noqa: E402

import mixerdsr.training as trainer  # noqa: E402
import mixerdsr.training._loop as loop  # noqa: E402
from mixerdsr.sharding import env_vmap, place_envs, using_devices  # noqa: E402

out = Path(sys.argv[1])
data = tiny_ode_split(3, seed=0)  # 4 envs: 3 devices pad them to 6


# fixed-step RK4 compiles in a fraction of an adaptive solve's time; the sharding is the same
FAST = {"train.low_memory_compile": True, "solver.method": "rk4", "solver.substeps": 1}


def run(devices, name, resume=False):
    cfg = tiny_cfg({"train.devices": devices, **FAST})
    res = trainer.train(cfg, data, out_dir=out / name, resume=resume, progress=False, log=lambda s: None)
    jax.clear_caches()  # each device count compiles its own code: keep one at a time (memory)
    return res


def assert_same(a, b, what):
    """Equal up to the order of floating-point sums: routes and gate update counts exactly,
    losses, parameters and contexts to a tolerance."""
    for ha, hb in zip(a.history, b.history, strict=True):
        assert ha["route"] == hb["route"], (what, ha["step"], ha["route"], hb["route"])
        assert ha["gate_updates"] == hb["gate_updates"], (what, ha["gate_updates"], hb["gate_updates"])
        np.testing.assert_allclose(ha["weight_loss"], hb["weight_loss"], rtol=1e-3, err_msg=what)
    for u, v in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state), strict=True):
        np.testing.assert_allclose(np.asarray(u, float), np.asarray(v, float), rtol=1e-3, atol=1e-4, err_msg=what)


one = run(1, "one")
assert one.data.x.shape[0] == 4 and len(one.data.x.sharding.device_set) == 1
assert sum(sum(h["gate_updates"].values()) for h in one.history) > 0  # K-means + least squares ran
four = run(4, "four")
assert four.data.x.shape[0] == 4 and len(four.data.x.sharding.device_set) == 4  # one env per device
assert_same(one, four, "4 devices")
# the gate's loss pass split by experts (M = 2 padded to 3 devices) instead of by envs
by_expert = trainer.train(tiny_cfg({"train.devices": 3, "train.split_experts": True, **FAST}), data, progress=False,
                          log=lambda s: None)
assert_same(one, by_expert, "experts over 3 devices")

# 4 devices, interrupted after 2 outer steps, resumed on 1 device
real = loop.make_outer_step


def interrupting(*a, **k):
    step, calls = real(*a, **k), []

    def wrapped(state, data):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return step(state, data)

    return wrapped


loop.make_outer_step = interrupting
try:
    run(4, "cut")
    raise AssertionError("not interrupted")
except KeyboardInterrupt:
    pass
loop.make_outer_step = real
assert_same(one, run(1, "cut", resume=True), "4 devices resumed on 1")

# the layout: padded with copies of the first env, one part per device; the map drops the padding
with using_devices(3):
    x = place_envs(np.arange(4.0))
    assert x.shape == (6,) and len(x.sharding.device_set) == 3 and list(np.asarray(x)) == [0, 1, 2, 3, 0, 0]
    y = jax.jit(lambda a: env_vmap(lambda v: 2 * v, a))(np.arange(5.0))
    assert list(np.asarray(y)) == [0, 2, 4, 6, 8]
print("sharded training equals one device's")
