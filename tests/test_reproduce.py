"""The reproduction harness: cells and their settings, the paper's parameter counts, and the
``smoke`` budget of every table run end to end (one cell each), skipped when done, reported."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mixerdsr import reproduce as R
from mixerdsr.reproduce import _budgets, _runner
from mixerdsr._config import load_config
from mixerdsr.cli import main


def test_cells_of_every_table():
    counts = {name: len(R.cells(name, seeds=[0, 1, 2])) for name in R.TABLES}
    # fig2: 3 backbones x 4 variants; table2: 2 protocols x 3 x 5; table3: 3 x 6;
    # table4: 3 datasets x (3 x 3 + CAVIA); gate: 2 x 2 x 3
    assert counts == {"fig2": 36, "table2": 90, "table3": 54, "table4": 90, "gate": 36}
    names = [c.name for c in R.cells("table4", seeds=[0])]
    assert len(set(names)) == len(names) and "lv-cavia-single-s0" in names
    # seeds outermost: every cell's first seed comes before any second seed
    seeds = [c.seed for c in R.cells("table2", seeds=[0, 1])]
    assert seeds == sorted(seeds)
    assert [c.name for c in R.cells("table2", [1], ["*-coda-mixer-1-*"])] == [
        "odebench-10a-coda-mixer-1-s1",
        "odebench-10a-clean-coda-mixer-1-s1",
    ]
    with pytest.raises(ValueError, match="unknown table 'table9'"):
        R.cells("table9")


def test_variant_settings():
    s = {c.variant: R.settings(c, "cpu") for c in R.cells("table2", [0], ["odebench-10a-geps-*"])}
    assert s["mixer-1"]["model.num_experts"] == 1 and s["mixer-1"]["train.batch_envs"] == 5  # E/M of MixER-10
    assert s["mixer-M-grad"]["gate.mode"] == "gradient" and s["mixer-M-grad"]["gate.router"] == "from_start"
    alg1 = s["mixer-M-alg1"]
    assert (alg1["gate.pairing"], alg1["gate.router"], alg1["train.proximal_beta"]) == ("greedy", "from_start", 10.0)
    assert "model.num_experts" not in s["mixer-M"] and s["mixer-M"]["gate.every"] == 12
    assert s["mixer-auto"]["gate.warm_start.grouping"] == "eigengap"
    assert s["mixer-auto"]["gate.warm_start.warmup"] == 100  # the budget's
    # the tables' warm starts kept the copied optimiser moments (the default until 2026-12-07)
    assert s["mixer-auto"]["gate.warm_start.fresh_moments"] is False
    assert "gate.warm_start.fresh_moments" not in R.settings(R.cells("table2", [0])[0], "smoke")
    auto4 = R.settings(R.Cell("table4", "go", "geps", "mixer-auto", 0), "cpu")
    assert auto4["gate.warm_start.grouping"] == "eigengap" and auto4["gate.warm_start.warmup"] == 50
    assert auto4["gate.router"] == "warm_start" and auto4["model.context_size"] == 6
    m20 = R.settings(R.Cell("table3", "odebench-10b", "coda", "mixer-20", 0), "cpu")
    assert m20["model.num_experts"] == 20
    paper = R.settings(R.Cell("table2", "odebench-10a", "geps", "mixer-1", 0), "paper")
    assert paper["train.outer_steps"] == 500 and paper["gate.every"] == 1 and paper["train.batch_envs"] == 50
    assert R.settings(R.Cell("gate", "odebench-2", "coda", "every-4", 1), "cpu")["gate.every"] == 4
    clean = R.settings(R.Cell("table2", "odebench-10a-clean", "geps", "mixer-1", 0), "cpu")
    assert clean["data.clean"] is True and clean["train.batch_envs"] == 5
    assert "data.clean" not in s["mixer-1"]
    for cell in R.cells("table3", [0]) + R.cells("fig2", [0]) + R.cells("gate", [0]) + R.cells("table2", [0]):
        for budget in R.BUDGETS:  # every cell's settings are a valid configuration
            cfg = load_config(R.preset_of(cell.data), None, R.settings(cell, budget))
            assert cfg.model.backbone == cell.backbone
    with pytest.raises(ValueError, match="unknown budget"):
        R.settings(R.cells("fig2", [0])[0], "gpu")
    # converged: the paper's sizes until validation stops improving, JSONs in converged/<table>/
    conv = R.settings(R.Cell("table4", "lv", "coda", "single", 0), "converged")
    assert conv["train.schedule"] == "plateau" and conv["train.outer_steps"] == 5000
    assert conv["model.coda.width"] == R.settings(R.Cell("table4", "lv", "coda", "single", 0), "paper")["model.coda.width"]
    # the published LV CoDA shape (3 hidden layers) at the paper's sizes only; the width follows the count
    assert conv["model.coda.depth"] == 4 and conv["model.coda.width"] == 224
    assert "model.coda.depth" not in R.settings(R.Cell("table4", "lv", "coda", "single", 0), "cpu")
    assert "model.coda.depth" not in R.settings(R.Cell("table4", "go", "coda", "single", 0), "converged")
    # single NCF in the NCF authors' shape (deep branches, contexts of 1024), MixER-NCF not
    ncf = R.settings(R.Cell("table4", "lv", "ncf", "single", 0), "converged")
    assert (ncf["model.ncf.branch_depth"], ncf["model.context_size"], ncf["model.ncf.width"]) == (3, 1024, 64)
    ours = R.settings(R.Cell("table4", "lv", "ncf", "single", 0), "converged", published_shape=False)
    assert "model.ncf.branch_depth" not in ours and ours["model.context_size"] == 512
    go = R.settings(R.Cell("table4", "go", "ncf", "single", 0), "converged")  # GO: layers of 122, contexts of 256
    assert (go["model.ncf.embed"], go["model.ncf.width"], go["model.context_size"]) == (122, 122, 256)
    assert abs(_budgets._active_count("go", go) - 131149) < 20  # the published count, less 13 Swish slopes
    # LV MixER-NCF in the same networks with 512 contexts per expert (the count in the context
    # network, not a main network of ~500); GO MixER-NCF keeps the shallow branches
    lv3 = R.settings(R.Cell("table4", "lv", "ncf", "mixer-M", 0), "converged")
    assert (lv3["model.ncf.branch_depth"], lv3["model.ncf.context_hidden"], lv3["model.context_size"]) == (3, 480, 1536)
    assert abs(_budgets._active_count("lv", lv3) - 307245) < 100 and lv3["model.ncf.width"] < 100
    assert "model.ncf.branch_depth" not in R.settings(R.Cell("table4", "go", "ncf", "mixer-M", 0), "converged")
    # full batches for the converged MixER cells, E / M at the paper budget
    assert R.settings(R.Cell("table4", "lv", "coda", "mixer-M", 0), "converged")["train.batch_envs"] == 9
    assert R.settings(R.Cell("table4", "lv", "coda", "mixer-M", 0), "paper")["train.batch_envs"] == 3  # E / M
    assert R.results_dir("docs/results", "table4", "converged").as_posix() == "docs/results/converged/table4"
    # E / M on sets of more than 16 envs, as the tables were made (the default is at least 16 since)
    assert R.settings(R.Cell("table2", "odebench-10a", "geps", "mixer-M", 0), "cpu")["train.batch_envs"] == 5
    assert R.settings(R.Cell("table4", "sm", "coda", "mixer-M", 0), "cpu")["train.batch_envs"] == 7
    assert "train.batch_envs" not in R.settings(R.Cell("fig2", "odebench-2", "geps", "mixer-M", 0), "cpu")


def test_table4_widths_match_the_papers_active_parameter_counts():
    for cell in R.cells("table4", [0]):
        for budget, scale in (("paper", 1), ("cpu", _budgets._T4_CPU_SCALE[cell.data])):  # cpu: a fraction of it
            if budget == "paper" and cell.data != "lv":
                continue
            over = R.settings(cell, budget)
            target = R.paper_active_parameters(cell) // scale
            count = _budgets._active_count(cell.data, over)
            assert abs(count - target) / target < 0.02, (cell.name, budget, count, target)
        ctx_per_expert = over["model.context_size"] // (1 if cell.variant == "single" else 3)
        assert ctx_per_expert == {"ncf": 512, "coda": 2, "geps": 2, "cavia": 2}[cell.backbone]


def test_generating_a_subset_equals_subsetting():
    from mixerdsr._config import DataSettings
    from mixerdsr._run import subset_splits
    from mixerdsr.data import resolve_dataset

    full, _ = resolve_dataset("odebench-2")
    sub, _ = resolve_dataset("odebench-2", envs_per_family=2, test_trajectories=3)
    ref = subset_splits(full, DataSettings(envs_per_family=2, test_trajectories=3))
    for name, split in sub.items():
        assert split.x.shape[:2] == ((4, 4) if name == "train" else (2, 1) if name == "adapt_train" else (4 if name == "test" else 2, 3))
        np.testing.assert_array_equal(split.x, ref[name].x)
        assert split.params == ref[name].params and list(split.family) == list(ref[name].family)


#: one cell of every table at the smoke budget; Tables 2 and 3 run cells of the same shapes (10
#: families x 2 envs, one expert), so the second reuses the first's compiled functions
SMOKE_CELLS = {
    "fig2": "odebench-2-geps-mixer-1-s0",
    "table2": "odebench-10a-geps-mixer-1-s0",
    "table3": "odebench-10b-geps-mixer-1-s0",
    "table4": "lv-cavia-single-s0",
    "gate": "odebench-2-geps-every-4-s0",
}


def test_smoke_budget_runs_skips_and_reports_table4(tmp_path, capsys):
    smoke_check("table4", tmp_path, capsys)  # CAVIA end to end


def test_cells_of_one_command_run_each_in_a_fresh_process(tmp_path):
    """Several cells in one command, each in its own process (compiled code does not pile up in
    one process until the system refuses memory mappings, as it did after 39 cells of Table 4)."""
    import os

    assert _runner._in_fresh_process(os.getpid) != os.getpid()
    # two cells (a pattern and a name; each cell's process imports JAX and compiles anew)
    args = ["reproduce", "table4", "--budget", "smoke", "--seeds", "0", "--cells", "sm-coda-mixer-M-*", "sm-coda-single-s0"]
    args += ["--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs"), "--quiet"]
    assert main(args) == 0
    names = sorted(p.stem for p in (tmp_path / "results" / "table4-smoke").glob("*.json"))
    assert names == ["sm-coda-mixer-M-s0", "sm-coda-single-s0"]
    # a pattern that matches no cell is refused before any process starts
    with pytest.raises(ValueError, match="no cell of table4"):
        R.run_table("table4", "smoke", seeds=[0], patterns=["nothing-*"], results=tmp_path, runs=tmp_path)


# 10-20 s each on 2 CPU cores (the smoke budget solves by fixed-step RK4, which compiles in a
# fraction of an adaptive solve's time). Tables 2 and 3: test_reproduce_tables.py.
@pytest.mark.parametrize("table", ["fig2", "gate"])
def test_smoke_budget_runs_skips_and_reports(table, tmp_path, capsys):
    smoke_check(table, tmp_path, capsys)


def smoke_check(table, tmp_path, capsys):
    """``mixerdsr reproduce TABLE --budget smoke`` on one cell: its JSON, the Markdown table with
    the paper's values, nothing run again on a second call, ``--report`` from the JSON alone."""
    args = ["reproduce", table, "--budget", "smoke", "--seeds", "0", "--cells", SMOKE_CELLS[table]]
    args += ["--results", str(tmp_path / "results"), "--runs", str(tmp_path / "runs"), "--quiet"]
    assert main(args) == 0
    path = tmp_path / "results" / f"{table}-smoke" / f"{SMOKE_CELLS[table]}.json"
    rec = json.loads(path.read_text())
    assert rec["cell"] == SMOKE_CELLS[table] and rec["budget"] == "smoke" and rec["seed"] == 0
    m = rec["metrics"]
    for key in ("test_rel_mse", "test_mse", "adapt_rel_mse", "adapt_mse"):
        assert m[key] is not None and np.isfinite(m[key]), key
    assert rec["active_parameters"] > 0 and rec["seconds"] > 0 and rec["curve"]
    assert not list((tmp_path / "runs").rglob("*.png"))  # the smoke budget draws no figures
    md = (tmp_path / "results" / f"{table}-smoke.md").read_text()
    assert "[0]" in md and "Budget `smoke`" in md
    if table == "table2":
        assert "/ 2.61 ± 0.1" in md  # GEPS MixER-1, the paper's Table 2
    if table == "table4":
        assert "| CAVIA | CAVIA |" in md and "/ 305246" in md
    if table == "fig2":
        assert (tmp_path / "results" / "fig2-smoke.png").stat().st_size > 0
        assert any("val_mse" in h for h in rec["curve"])
    # a second call finds the JSON and runs nothing
    before = path.stat().st_mtime_ns
    capsys.readouterr()
    assert main(args[:-1]) == 0
    assert "1 cell(s) already done" in capsys.readouterr().out
    assert path.stat().st_mtime_ns == before
    # --report alone rebuilds the same table from the JSON
    assert main([*args, "--report"]) == 0
    assert (tmp_path / "results" / f"{table}-smoke.md").read_text() == md
    if table == "fig2":  # --force trains the finished cell again from the start (not its checkpoint)
        run_dir = tmp_path / "runs" / f"{table}-smoke" / SMOKE_CELLS[table]
        (run_dir / "history.jsonl").write_text("")
        assert main([*args, "--force"]) == 0
        assert path.stat().st_mtime_ns != before
        steps = [json.loads(line)["step"] for line in (run_dir / "history.jsonl").read_text().splitlines()]
        assert steps == [0, 1]


def test_shard_parts_are_disjoint_and_cover_the_table():
    import argparse

    from mixerdsr.cli._reproduce import _shard_arg

    for table in R.TABLES:
        every = R.cells(table, (0, 1, 2))
        for n in (1, 2, 7, len(every) + 3):
            parts = [R.shard_cells(every, k, n) for k in range(1, n + 1)]
            names = [c.name for p in parts for c in p]
            assert sorted(names) == sorted(c.name for c in every) and len(set(names)) == len(names)
            assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced
    with pytest.raises(ValueError, match="1 <= K <= N"):
        R.shard_cells(every, 0, 3)
    assert _shard_arg("2/8") == (2, 8)
    for bad in ("0/3", "4/3", "3", "a/b", "2/"):
        with pytest.raises(argparse.ArgumentTypeError):
            _shard_arg(bad)


def test_a_cell_that_cannot_resume_keeps_its_run(tmp_path, monkeypatch):
    """An interrupted cell whose settings no longer match is moved aside, never deleted (hours of
    training were once lost this way), and the message says where it went, at once."""
    import mixerdsr._run as run_module
    from mixerdsr.training import ResumeError

    calls = []

    def fake_run(cfg, rd, resume=False, **kw):
        calls.append(resume)
        if resume:
            raise ResumeError("cannot resume, the configuration differs (x: checkpoint 1, given 2)")
        rd.mkdir(parents=True)
        return "fresh"

    monkeypatch.setattr(run_module, "run", fake_run)
    monkeypatch.setattr(_runner, "cell_record", lambda cell, budget, over, res, secs: {"res": res})
    cell = R.cells("table4", [0], ["lv-coda-single-s0"])[0]
    rd = tmp_path / cell.name
    rd.mkdir()
    (rd / "checkpoint.npz").write_bytes(b"hours of training")
    (tmp_path / f"{cell.name}.unresumed-1").mkdir()  # an earlier one is kept too
    said = []
    assert _runner.run_cell(cell, "smoke", tmp_path, log=said.append) == {"res": "fresh"}
    assert calls == [True, False]
    kept = tmp_path / f"{cell.name}.unresumed-2"
    assert (kept / "checkpoint.npz").read_bytes() == b"hours of training"
    assert len(said) == 1 and str(kept) in said[0] and "x: checkpoint 1, given 2" in said[0]
    # any other refusal (another process holds the directory, ...) leaves the run where it is
    def busy(cfg, rd, resume=False, **kw):
        raise ValueError("another mixerdsr run (process 1) is using this directory")

    monkeypatch.setattr(run_module, "run", busy)
    (rd / "checkpoint.npz").write_bytes(b"more training")
    with pytest.raises(ValueError, match="another mixerdsr run"):
        _runner.run_cell(cell, "smoke", tmp_path, log=said.append)
    assert (rd / "checkpoint.npz").read_bytes() == b"more training"
    assert not (tmp_path / f"{cell.name}.unresumed-3").exists() and len(said) == 1


def test_a_killed_command_leaves_no_cell_running(tmp_path):
    """The fresh process of a cell ends with the command that started it, even when that one is
    killed outright (an orphaned cell once trained on and wrote into a directory a new run used)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    pids = tmp_path / "pids"
    script = (
        "import subprocess\n"
        "from mixerdsr.reproduce._runner import _in_fresh_process\n"
        f"_in_fresh_process(subprocess.call, ['sh', '-c', 'echo $PPID $$ > {pids}; exec sleep 60'])\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        for _ in range(600):
            if pids.exists() and len(pids.read_text().split()) == 2:
                break
            time.sleep(0.1)
        child, sleeper = map(int, pids.read_text().split())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()

        def gone(pid):
            try:
                return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] in ("Z", "X")
            except (FileNotFoundError, IndexError):
                return True

        deadline = time.time() + 15
        while not gone(child) and time.time() < deadline:
            time.sleep(0.2)
        assert gone(child), "the cell's process outlived the command"
    finally:
        parent.kill()
        if pids.exists() and len(pids.read_text().split()) == 2:
            os.kill(int(pids.read_text().split()[1]), signal.SIGKILL)
