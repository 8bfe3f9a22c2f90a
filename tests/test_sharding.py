"""Environments over several devices (mixerdsr.sharding), on fake CPU devices."""

import subprocess
import sys
from pathlib import Path

import pytest


def test_training_over_devices_equals_one_device(tmp_path):
    """1 and 4 devices, and the gate's loss pass split by experts over 3 (envs and experts
    padded), give the same routes, gate updates, losses, parameters and gate, and a checkpoint
    written on 4 devices resumes on 1 (tests/sharded_check.py, in a process of its own: the
    device count is fixed when XLA starts)."""
    import jax
    from conftest import _release_memory

    jax.clear_caches()  # this worker's compiled functions, while the child process runs
    _release_memory()
    script = Path(__file__).with_name("sharded_check.py")
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "sharded training equals one device's" in done.stdout


def test_more_devices_than_there_are_is_refused():
    from mixerdsr.sharding import env_mesh, env_shards

    assert env_mesh(1) is None and env_shards() == 1
    with pytest.raises(ValueError, match="train.devices = 64: JAX sees 1 device.*xla_force_host_platform_device_count"):
        env_mesh(64)


@pytest.mark.parametrize(
    "flags, found",
    [
        (["--coordinator", "localhost:1234"], "needs --num-processes and --process-id"),
        (["--coordinator", "localhost:1234", "--num-processes", "2", "--process-id", "2"], "expected 0 to 1"),
    ],
)
def test_several_hosts_flags_are_checked(flags, found, capsys):
    from mixerdsr.cli import main

    assert main(["run", "--outer-steps", "1", *flags]) == 2
    assert found in capsys.readouterr().err
