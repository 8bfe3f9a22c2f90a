"""Shared fixtures: tiny analytic datasets so that tests compile and run in seconds."""

from __future__ import annotations

import ctypes
import gc
import os
import shutil
import sys
import tempfile

# Equinox's runtime error checks (used inside diffrax) are host callbacks by default, and JAX
# never writes a computation with host callbacks to its persistent compilation cache. Tests only
# check results, so the checks turn results into NaN instead (read when equinox is imported).
os.environ.setdefault("EQX_ON_ERROR", "nan")
# XLA's CPU fusion emitters need most of the memory of compiling a training step; without them
# compiling is as fast and the suite stays within its memory budget (the computations are tiny,
# so their slower loops do not matter). test_training checks that both builds agree.
if "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_use_fusion_emitters=false").strip()

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# jax and mixerdsr are imported where used, so that pytest-xdist's controller process (which
# runs no test) stays small: the suite's memory budget is the sum over all its processes.

#: the tiny run configuration the tests share (settings by dotted name): the fewer distinct
#: configurations, the fewer distinct compiled training steps (each costs seconds to compile)
TINY = {
    "model.geps.width": 8, "model.geps.depth": 2, "model.context_size": 4, "model.num_experts": 2,
    "train.inner_steps": 3, "train.outer_steps": 4, "train.val_every": 2, "train.checkpoint_every": 2,
    "adapt.steps": 15, "adapt.screen_steps": 5, "data.val_trajectories": 1,
    # the training recipe the pinned figures of test_training were measured with (the defaults
    # changed to proximal_beta 0, lr_weights 3e-3, clip_norm 1 since; the smoke tables run those)
    "train.proximal_beta": 10.0, "train.lr_weights": 1e-3, "train.clip_norm": 0.0,
    "train.batch_envs": 2,  # E / M of the tiny sets (the default trains small sets on all envs since)
    "adapt.lr": 1e-2,  # the adaptation rate of the pinned figures (the default is 3e-3 since 2026-12-07)
    # the routing of the pinned figures (the defaults are the warm start, overlap pairing and
    # spectral seeding since 2026-12-07)
    "gate.router": "from_start", "gate.pairing": "greedy", "gate.warm_start.method": "kmeans",
}


def tiny_cfg(changes: dict | None = None) -> Config:
    """The TINY configuration with ``changes`` (dotted names) applied."""
    from mixerdsr import Config

    return Config().override({**TINY, **(changes or {})})


def toml_text(flat: dict) -> str:
    """A configuration file holding the settings ``flat`` (dotted names), in sections."""
    import tomli_w

    nested: dict = {}
    for key, value in flat.items():
        *path, last = key.split(".")
        node = nested
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return tomli_w.dumps(nested)


def pytest_configure(config):
    """One persistent compilation cache for the test session: the same computation traced by
    several tests (a fresh ``jit`` closure per call of ``make_outer_step``, say) is compiled once.
    ``MIXERDSR_TEST_JAX_CACHE`` names a folder to keep it across sessions."""
    folder = os.environ.get("MIXERDSR_TEST_JAX_CACHE")
    if not folder:
        folder = tempfile.mkdtemp(prefix="mixerdsr-jax-cache-")
        config._mixerdsr_cache = folder  # removed at the end of the session
        os.environ["MIXERDSR_TEST_JAX_CACHE"] = folder  # shared with pytest-xdist's workers
    os.environ["MIXERDSR_CACHE_DIR"] = os.environ["MIXERDSR_TEST_JAX_CACHE"]  # what `mixerdsr adapt` uses


#: modules that compile training steps, longest first: run first, so that pytest-xdist's workers
#: (``--dist loadfile``: a module stays on one worker) finish together instead of one of them
#: starting the longest module last
HEAVY_MODULES = ("test_reproduce", "test_reproduce_tables", "test_training", "test_custom_expert", "test_shplrnn", "test_trust", "test_mixer")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_MODULES)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rsplit(".", 1)[-1], len(rank)))


@pytest.fixture(autouse=True, scope="session")
def _jax_compilation_cache():
    """JAX's persistent compilation cache in the folder of ``pytest_configure``."""
    import jax

    jax.config.update("jax_compilation_cache_dir", os.environ["MIXERDSR_TEST_JAX_CACHE"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    folder = getattr(config, "_mixerdsr_cache", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def _release_memory() -> None:
    """Collect garbage (compiled functions of finished tests among it) and hand the freed heap
    back to the system, so that the next compilation starts from a small footprint."""
    gc.collect()
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


#: resident memory (MiB) above which the compiled functions are dropped after a test: the
#: suite's budget shared by pytest-xdist's workers (``-n``), each a process of its own
SOFT_MEMORY_LIMIT_MB = 1300 // max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


def _resident_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):  # not Linux: no measurement, no dropping
        return 0.0


@pytest.fixture(autouse=True)
def _free_memory_after_each_test():
    """Keep the suite's memory bounded: JAX keeps every traced and compiled function of the
    session; past ``SOFT_MEMORY_LIMIT_MB`` they are dropped (what a later test needs again is
    traced anew and loaded from the persistent compilation cache)."""
    yield
    _release_memory()
    if _resident_mb() > SOFT_MEMORY_LIMIT_MB:
        import jax

        jax.clear_caches()
        _release_memory()


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_functions():
    """Drop the in-memory compiled functions after each test module (a later module that needs
    one of them again loads it from the persistent cache)."""
    yield
    import jax

    jax.clear_caches()
    _release_memory()


def tiny_ode_split(n_traj: int = 3, n_times: int = 12, seed: int = 0, split: str = "train",
                   omegas=(1.0, 1.3), decays=(0.5, 0.8)) -> EnvData:
    """Two families with 2 envs each, exact solutions: harmonic oscillators (family 0) and
    2-D exponential decays (family 1). ``x [4, n_traj, n_times, 2]``."""
    from mixerdsr import EnvData

    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 3.0, n_times)
    xs, fam = [], []
    for w in omegas:
        ic = rng.uniform(0.5, 1.5, (n_traj, 2))
        x0 = ic[:, :1] * np.cos(w * t) + ic[:, 1:] / w * np.sin(w * t)
        v = -ic[:, :1] * w * np.sin(w * t) + ic[:, 1:] * np.cos(w * t)
        xs.append(np.stack([x0, v], -1))
        fam.append(0)
    for k in decays:
        ic = rng.uniform(0.5, 1.5, (n_traj, 2))
        xs.append(ic[:, None, :] * np.exp(-k * t)[None, :, None])
        fam.append(1)
    return EnvData(x=np.stack(xs).astype(np.float32), t=np.tile(t, (4, 1)).astype(np.float32),
                   family=np.array(fam), split=split, family_names=("oscillator", "decay"),
                   params=tuple((p,) for p in (*omegas, *decays)))


@pytest.fixture
def tiny_splits() -> dict[str, EnvData]:
    return {
        "train": tiny_ode_split(3, seed=0),
        "test": tiny_ode_split(2, seed=1, split="test"),
        "adapt_train": tiny_ode_split(1, seed=2, split="adapt_train", omegas=(1.15, 0.9), decays=(0.65, 0.4)),
        "adapt_test": tiny_ode_split(2, seed=3, split="adapt_test", omegas=(1.15, 0.9), decays=(0.65, 0.4)),
    }
