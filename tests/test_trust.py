"""Bad input, damaged files and clearly bad results: one clear line and exit 2, nothing lost, and
warnings instead of silent wrong answers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

import mixerdsr._run as runmod
import mixerdsr.training as trainer
from mixerdsr import EnvData, save_dataset
from mixerdsr._config import Config, DataSettings, TrainSettings, load_config
from mixerdsr._diagnostics import collapsed_envs, diagnose
from mixerdsr.checkpoint import save_checkpoint
from mixerdsr.cli import main
from mixerdsr.data import DataError, load_dataset

from conftest import TINY, tiny_cfg, tiny_ode_split, toml_text


def _error_line(capsys) -> str:
    """The one line a failed command printed on stderr (no traceback)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _fake_run_dir(path, cfg: Config):
    """A run directory holding a checkpoint of ``cfg`` (a stand-in state: only its config is read
    before the checks under test fail)."""
    path.mkdir(parents=True)
    save_checkpoint(path / "checkpoint.npz", {"a": jnp.zeros(3)}, cfg.to_dict(), {"step": 1})
    (path / "config.toml").write_text("# the run's own config\n")
    return path


def _truncate(src, dst, frac=0.6):
    b = src.read_bytes()
    dst.write_bytes(b[: int(len(b) * frac)])
    return dst


# ------------------------------------------------------------------------ silent wrong answers
def test_stale_data_file_is_not_reused_without_resume(tiny_splits, tmp_path):
    """Item 1: an aborted run's data.npz must not stand in for another --data."""
    out = tmp_path / "S"
    out.mkdir()
    save_dataset(out / "data.npz", tiny_splits, {"name": "tiny"})
    splits, meta = runmod._load_data(Config(data=DataSettings("lv")), out, log=lambda s: None, progress=False)
    assert meta["name"] == "lv" and splits["train"].n_envs == 9
    assert load_dataset(out / "data.npz")["train"].n_envs == 9  # the cache now holds what was trained on
    # resuming reuses the cache (its checkpoint's configuration, data included, is checked first)
    again, meta2 = runmod._load_data(Config(data=DataSettings("sm")), out, log=lambda s: None, progress=False, reuse=True)
    assert meta2["name"] == "lv" and again["train"].n_envs == 9


@pytest.mark.parametrize(
    "change", [{"model.num_experts": 4}, {"train.seed": 7}, {"data.source": "lv"}, {"train.outer_steps": 9}]
)
def test_refused_resume_leaves_the_run_untouched(tiny_splits, tmp_path, capsys, change):
    """Item 2: a refused --resume does not overwrite config.toml (or anything else)."""
    run_dir = _fake_run_dir(tmp_path / "r", tiny_cfg())
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with pytest.raises(ValueError, match="cannot resume") as err:
        runmod.run(tiny_cfg(change), run_dir, resume=True, splits=tiny_splits, progress=False)
    assert next(iter(change)) in str(err.value)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != ".lock"} == before


def test_warm_start_settings_written_under_their_old_names_are_read_in_their_table(tmp_path):
    """Files, checkpoints and overrides from before [gate.warm_start] (flat gate.warmup,
    gate.choose, gate.seed_method, ...) mean the same run: the settings move to the table and
    gate.warmup > 0 becomes gate.router = "warm_start"."""
    from mixerdsr._config import Config, load_config
    from mixerdsr.checkpoint import save_checkpoint
    from mixerdsr.training import check_resume

    new = tiny_cfg({"gate.router": "warm_start", "gate.warm_start.warmup": 7, "gate.warm_start.method": "spectral",
                    "gate.warm_start.grouping": "silhouette", "gate.warm_start.batch": -1})
    flat = new.to_dict()
    ws = flat["gate"].pop("warm_start")
    del flat["gate"]["router"]
    flat["gate"] |= {"warmup": 7, "seed_method": "spectral", "choose": "silhouette", "warmup_batch": -1,
                     "seed_restarts": ws["restarts"], "seed_neighbours": ws["neighbours"], "seed_from": ws["seed_from"],
                     "silhouette_min": ws["silhouette_min"], "silhouette_slack": ws["silhouette_slack"],
                     "single_fit": ws["single_fit"]}
    assert Config.from_dict(flat) == new
    old_ckpt = save_checkpoint(tmp_path / "old.npz", {"w": np.zeros(2)}, flat)
    # it was trained with the experts' copied optimiser moments (before fresh_moments existed):
    # resumable so, refused with the fresh optimiser of today's default, naming the setting
    check_resume(old_ckpt, new.override({"gate.warm_start.fresh_moments": False}))
    with pytest.raises(ValueError, match="fresh_moments: checkpoint False, given True"):
        check_resume(old_ckpt, new)
    old_file = tmp_path / "old.toml"
    old_file.write_text('[gate]\nwarmup = 0\nseed_from = "init"\n')
    c = load_config(None, old_file)
    assert c.gate.router == "from_start" and c.gate.warm_start.seed_from == "init"
    assert tiny_cfg({"gate.warmup": 7, "gate.seed_method": "spectral", "gate.choose": "silhouette",
                     "gate.warmup_batch": -1}) == new
    assert load_config("odebench-10a", None, {"gate.warmup": 0}).gate.router == "from_start"


def test_resume_of_a_checkpoint_written_before_a_setting_existed(tmp_path):
    """A setting added later counts as its default for an older checkpoint: resumable with the
    default, refused with another value."""
    from mixerdsr.training import check_resume
    from mixerdsr.checkpoint import save_checkpoint

    cfg = tiny_cfg({"gate.router": "warm_start"})
    old = cfg.to_dict()
    del old["gate"]["warm_start"]["method"]  # as written before gate.warm_start.method existed
    ckpt = save_checkpoint(tmp_path / "checkpoint.npz", {"w": np.zeros(2)}, old)
    check_resume(ckpt, cfg)
    with pytest.raises(ValueError, match="gate.warm_start.method"):
        check_resume(ckpt, tiny_cfg({"gate.router": "warm_start", "gate.warm_start.method": "spectral"}))
    # routed from the start, the warm start's table cannot change training
    old = tiny_cfg().to_dict()
    ckpt = save_checkpoint(tmp_path / "from_start.npz", {"w": np.zeros(2)}, old)
    check_resume(ckpt, tiny_cfg({"gate.warm_start.method": "spectral", "gate.warm_start.warmup": 9}))
    with pytest.raises(ValueError, match="gate.router"):
        check_resume(ckpt, tiny_cfg({"gate.router": "warm_start"}))
    # another backbone than the default's: the defaults of the default backbone do not count
    from mixerdsr._config import load_config

    ncf = load_config("lv", None, {"model.backbone": "ncf"})
    old = ncf.to_dict()
    del old["gate"]["warm_start"]["method"]
    check_resume(save_checkpoint(tmp_path / "ncf.npz", {"w": np.zeros(2)}, old), ncf)
    # a setting whose default is not the old behaviour: a checkpoint without clip_norm trained unclipped
    old = tiny_cfg({"train.clip_norm": 0.0}).to_dict()
    del old["train"]["clip_norm"]
    ckpt = save_checkpoint(tmp_path / "unclipped.npz", {"w": np.zeros(2)}, old)
    check_resume(ckpt, tiny_cfg({"train.clip_norm": 0.0}))
    with pytest.raises(ValueError, match="train.clip_norm: checkpoint 0.0, given 1.0"):
        check_resume(ckpt, tiny_cfg({"train.clip_norm": 1.0}))
    # a setting only sequence backbones read: an ODE run written before it existed resumes with
    # any value, a hier-shPLRNN run only with the old behaviour
    for backbone, resumes in (("coda", True), ("shplrnn", False)):
        old = load_config("lv", None, {"model.backbone": backbone}).to_dict()
        del old["solver"]["sequence_start"]  # before solver.sequence_start existed ("zeros")
        ckpt = save_checkpoint(tmp_path / f"{backbone}.npz", {"w": np.zeros(2)}, old)
        given = load_config("lv", None, {"model.backbone": backbone, "solver.sequence_start": "data"})
        if resumes:
            check_resume(ckpt, given)
        else:
            with pytest.raises(ValueError, match="solver.sequence_start: checkpoint 'zeros', given 'data'"):
                check_resume(ckpt, given)


def test_two_runs_on_one_directory_are_refused(tmp_path, capsys):
    """Item 3: a second process cannot write into a directory a running job holds."""
    out = tmp_path / "busy"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from mixerdsr._run import run_lock
            with run_lock(Path({str(out)!r})):
                print("locked", flush=True)
                sys.stdin.read()
            """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["run", "--out", str(out), "--quiet"]) == 2
        line = _error_line(capsys)
        assert "another mixerdsr run" in line and str(holder.pid) in line
        assert not (out / "history.jsonl").exists() and not (out / "config.toml").exists()
    finally:
        holder.communicate("", timeout=30)
    # once the other process has ended, the directory is free again
    with runmod.run_lock(out):
        pass


def test_data_beyond_float32_and_single_time_point_are_refused(tmp_path, capsys):
    """Item 5: values that overflow float32's squared errors, and T = 1 (nothing to score)."""
    x = np.ones((2, 1, 4, 2))
    t = np.tile(np.linspace(0, 1, 4), (2, 1))
    with pytest.raises(DataError, match=r"train/x.*magnitude.*1e\+300"):
        EnvData(x * 1e300, t, np.zeros(2, int), split="train")
    with pytest.raises(DataError, match=r"train/x.*at least 2 time points"):
        EnvData(x[:, :, :1], t[:, :1], np.zeros(2, int), split="train")
    np.savez(tmp_path / "huge.npz", **{"train/x": x * 1e300, "train/t": t, "train/family": np.zeros(2, int)})
    assert main(["run", "--data", str(tmp_path / "huge.npz"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "huge.npz" in _error_line(capsys)


def test_splits_with_different_dimensions_are_refused(tmp_path, capsys):
    """Item 6: cross-split validation on load, before any training."""
    tr = tiny_ode_split(2)
    test3 = EnvData(np.ones((4, 2, 12, 3)), tr.t, tr.family)
    with pytest.raises(DataError, match="same state dimension"):
        runmod.run(tiny_cfg(), tmp_path / "r", splits={"train": tr, "test": test3}, progress=False)
    np.savez(tmp_path / "mixed.npz", **{"train/x": tr.x, "train/t": tr.t, "train/family": tr.family,
                                        "test/x": test3.x, "test/t": tr.t, "test/family": tr.family})
    assert main(["data", "show", str(tmp_path / "mixed.npz"), "--no-plot"]) == 2
    assert "same state dimension" in _error_line(capsys)
    fewer = EnvData(tr.x[:3], tr.t[:3], tr.family[:3])
    with pytest.raises(DataError, match="test/x.*4 environments"):
        runmod.run(tiny_cfg(), tmp_path / "r2", splits={"train": tr, "test": fewer}, progress=False)


def test_console_formats_missing_metrics(capsys):
    from mixerdsr.cli._common import _num

    assert _num(None) == "n/a" and _num(float("nan")) == "n/a" and _num(float("inf")) == "n/a"
    assert _num(0.123456) == "0.1235" and _num(12.34, ".1f") == "12.3"


# ------------------------------------------------------------------------ warnings (item 7)
def _metrics(**kw):
    m = {"test": {"rel_mse": 0.09, "failed_solves": 0, "collapsed_envs": []},
         "adapt_test": {"rel_mse": 0.2, "failed_solves": 0, "collapsed_envs": []},
         "routing": {"counts": [5, 5]}}
    for k, v in kw.items():
        m[k] = {**m.get(k, {}), **v}
    return m


def test_diagnose_is_silent_on_a_good_run():
    assert diagnose(_metrics(), [{"step": 0, "ctx_loss": 0.1, "weight_loss": 0.1, "failed": 0}]) == []
    settled = [{"step": s, "ctx_loss": 0.1, "weight_loss": 0.1, "changed": int(s == 3) * 5} for s in range(10)]
    assert diagnose(_metrics(routing={"counts": [10, 0], "active": [True, False]}), settled) == []


@pytest.mark.parametrize("metrics, history, words", [
    (_metrics(), [{"step": 3, "ctx_loss": None, "weight_loss": 0.2, "failed": 6}], "every ODE solve"),
    (_metrics(), [{"step": 3, "ctx_loss": 0.1, "weight_loss": 0.2, "failed": 2}], "2 environment solves failed"),
    (_metrics(test={"failed_solves": 3}), [], "test: 3 trajectory solve"),
    (_metrics(test={"rel_mse": None}), [], "test: relMSE is not finite"),
    (_metrics(adapt_test={"collapsed_envs": [0]}), [], "adapt_test: the forecast of 1 environment(s) [0] collapses"),
    (_metrics(routing={"counts": [10, 0]}), [], "expert(s) [1] received no training environment"),
    (_metrics(routing={"counts": [2, 9, 1]}), [], "expert 1 holds 9 of 12"),
    (_metrics(adapt_test={"rel_mse": 5.3}), [], "adaptation relMSE 5.3 is 59x the test's 0.09"),
    (_metrics(adapt_test={"rel_mse": 5.3, "median_traj_rel_mse": 0.9}, test={"rel_mse": 0.09, "median_traj_rel_mse": 0.05}),
     [], "adaptation typical trajectory's relMSE (median) 0.9 is 18x the test's 0.05"),
    # the choice of the number of experts switched expert 1 off: not idle; an active expert without envs is
    (_metrics(routing={"counts": [10, 0, 0], "active": [True, False, True]}), [], "expert(s) [2] received no"),
    # 1 of 10 envs changed expert in the last tenth of 10 steps: flagged; the same change earlier is not
    (_metrics(), [{"step": s, "ctx_loss": 0.1, "weight_loss": 0.1, "changed": int(s == 9)} for s in range(10)],
     "1 expert changes in the last 1 outer steps"),
    # new envs: env 1's runner-up explains its data almost as well (env 2 has no runner-up: not flagged)
    (_metrics(adapt_test={"routes": [0, 1, 1], "runner_up": [1, 0, -1], "confidence": [0.9, 0.05, 0.0]}), [],
     "the expert of 1 new environment(s) is unclear: the runner-up explains the adaptation data almost as well "
     "(env 1: expert 1 vs 0 (0.05)"),
    (_metrics(adapt_test={"fit_rel_loss": [0.01, 0.4]}), [], "1 new environment(s) [1] are poorly fitted"),
    # clearly bad forecasts (a 5-step expert, random data) and an Eq. 9 that a few trajectories dominate
    (_metrics(test={"rel_mse": 44.9, "traj_rel_l2": 0.93}), [], "test: the forecasts are poor: their error is 0.93"),
])
def test_diagnose_flags_clearly_bad_results(metrics, history, words):
    found = diagnose(metrics, history)
    assert len(found) == 1 and words in found[0], found


def test_a_sequence_expert_on_a_strided_grid_is_pointed_to_the_datas_own_grid():
    def cfg(backbone, stride):
        return {"model": {"backbone": backbone}, "data": {"time_stride": stride}}

    poor = _metrics(test={"rel_mse": 3.4, "traj_rel_l2": 1.03})
    found = diagnose({**poor, "config": cfg("shplrnn", 5)})
    assert any("data.time_stride=1" in w and "every 5th" in w for w in found), found
    good = _metrics(test={"traj_rel_l2": 0.09})
    for m in ({**poor, "config": cfg("shplrnn", 1)}, {**poor, "config": cfg("geps", 5)},
              {**good, "config": cfg("shplrnn", 5)}):
        assert not any("one-step map" in w for w in diagnose(m))


def test_an_eq9_dominated_by_near_zero_states_is_a_reading_note_not_a_warning():
    from mixerdsr._diagnostics import reading_notes

    m = _metrics(test={"rel_mse": 6.3, "traj_rel_l2": 0.05, "median_traj_rel_mse": 0.05})
    assert diagnose(m, []) == []
    (note,) = reading_notes(m)
    assert "test: relMSE (Eq. 9) 6.3 is dominated by a few trajectories" in note and "0.05 (median" in note
    assert reading_notes(_metrics(test={"rel_mse": 0.3, "median_traj_rel_mse": 0.05})) == []


def test_collapsed_forecast_is_detected():
    t = np.linspace(0, 6, 30)
    x = np.stack([np.sin(t), np.cos(t)], -1)[None, None]  # [1, 1, 30, 2]
    good = x + 0.05
    flat = np.broadcast_to(x[:, :, :1], x.shape)  # stuck at the initial state
    assert collapsed_envs(np.concatenate([good, flat]), np.concatenate([x, x])) == [1]
    # a failed trajectory is not judged
    assert collapsed_envs(flat, x, ok=np.array([[False]])) == []


def test_diverged_forecasts_are_counted_and_kept_out_of_the_means(monkeypatch):
    import mixerdsr.evaluation as ev
    from mixerdsr._diagnostics import diverged_envs

    t = np.linspace(0, 6, 30)
    x = np.stack([np.sin(t), np.cos(t)], -1)[None, None].repeat(3, 0)  # [3, 1, 30, 2], range 2 per dim
    pred = x + 0.1
    pred[1, 0, -1] = [1e19, 0.0]  # runs off (the 3.9e19 adaptation once reported)
    pred[2, 0, 5] = [np.nan, 0.0]
    assert diverged_envs(pred, x) == [1, 2]
    far = x.copy()
    far[0, 0, 3, 0] = 150.0  # 149 past the data's max: 74.5 ranges, not diverged; 250: diverged
    assert diverged_envs(far, x) == [] and diverged_envs(far + np.where(far == 150.0, 100.0, 0.0), x) == [0]
    assert diverged_envs(x, x, ok=np.array([[True], [False], [True]])) == [1]
    # evaluate_split: means over the others, the count beside them, per-env null, TPRMSE counts them as failed
    monkeypatch.setattr(ev, "predict", lambda *a, **k: (pred, np.ones((3, 1), bool)))
    split = EnvData(x.astype(np.float32), np.tile(t, (3, 1)).astype(np.float32), np.zeros(3, int))
    model = type("Model", (), {"expert_type": type("E", (), {"scored_from": 0, "teacher_forced": False})})()
    m, _ = ev.evaluate_split(model, None, split, Config())
    assert m["diverged_envs"] == [1, 2] and m["n_diverged"] == 2
    assert m["mse"] == pytest.approx(0.01, rel=1e-5)  # env 0 alone: every component off by 0.1
    assert np.isnan(m["per_env_rel_mse"][1]) and np.isfinite(m["per_env_rel_mse"][0])
    assert m["tprmse"] == pytest.approx(100 / 3 * (m["per_env_rel_mse"][0] < 0.1))
    words = diagnose({"adapt_test": m}, [])
    assert any("2 environment(s) [1, 2] diverged" in w and "leave them out" in w for w in words)


# ------------------------------------------------------------------------ one clear line, exit 2
def test_damaged_files_give_one_line(tiny_splits, tmp_path, capsys):
    data = save_dataset(tmp_path / "d.npz", tiny_splits)
    for bad in (_truncate(data, tmp_path / "trunc.npz"), tmp_path / "empty.npz"):
        if bad.name == "empty.npz":
            bad.write_bytes(b"")
        assert main(["data", "show", str(bad), "--no-plot"]) == 2
        assert bad.name in _error_line(capsys)
    # a readable zip whose member is damaged (bytes overwritten inside the compressed stream)
    raw = bytearray(data.read_bytes())
    raw[200:260] = b"\0" * 60
    (tmp_path / "garbled.npz").write_bytes(bytes(raw))
    assert main(["data", "show", str(tmp_path / "garbled.npz"), "--no-plot"]) == 2
    assert "garbled.npz" in _error_line(capsys)
    # __meta__ of the wrong JSON type
    arrays = {f"train/{k}": getattr(tiny_splits["train"], k) for k in ("x", "t", "family")}
    for meta in (b"[1, 2]", b'{"splits": {"train": 3}}', b'{"splits": {"train": {"params": 7}}}'):
        np.savez(tmp_path / "meta.npz", **arrays, __meta__=np.frombuffer(meta, np.uint8))
        assert main(["data", "show", str(tmp_path / "meta.npz"), "--no-plot"]) == 2
        assert "__meta__" in _error_line(capsys)


def test_damaged_run_files_give_one_line(tiny_splits, tmp_path, capsys):
    c = tiny_cfg({"data.source": str(save_dataset(tmp_path / "d.npz", tiny_splits))})
    toml = tmp_path / "c.toml"
    toml.write_text(toml_text(TINY))
    base = ["run", "--config", str(toml), "--data", c.data.source, "--quiet", "--resume"]
    # a truncated checkpoint, and a text file given as checkpoint
    run1 = _fake_run_dir(tmp_path / "r1", c)
    _truncate(run1 / "checkpoint.npz", run1 / "checkpoint.npz", 0.5)
    assert main([*base, "--out", str(run1)]) == 2
    assert "checkpoint.npz" in _error_line(capsys)
    run2 = _fake_run_dir(tmp_path / "r2", c)
    (run2 / "checkpoint.npz").write_text("not a checkpoint\n")
    assert main([*base, "--out", str(run2)]) == 2
    line = _error_line(capsys)
    assert str(run2 / "checkpoint.npz") in line and "not a mixerdsr checkpoint" in line
    # a damaged data.npz in the run folder, met on --resume (the cache is reused only then)
    run3 = _fake_run_dir(tmp_path / "r3", c.override({"data.source": "lv"}))
    save_dataset(run3 / "data.npz", tiny_splits)
    _truncate(run3 / "data.npz", run3 / "data.npz")
    assert main(["run", "--config", str(toml), "--data", "lv", "--quiet", "--resume", "--out", str(run3)]) == 2
    assert "data.npz" in _error_line(capsys)
    # a damaged contexts.npz
    (run3 / "contexts.npz").write_bytes(b"PK\x03\x04 garbage")
    assert main(["contexts", str(run3)]) == 2
    assert "contexts.npz" in _error_line(capsys)


def test_partial_last_history_line_is_dropped(tmp_path):
    h = tmp_path / "history.jsonl"
    h.write_text('{"step": 0, "ctx_loss": 1.0}\n{"step": 1, "ctx_loss": 0.5}\n{"step": 2, "ctx_lo')
    said = []
    assert [r["step"] for r in trainer.read_history(h, said.append)] == [0, 1]
    assert "partly written last line" in said[0]
    h.write_text('{"step": 0}\n{"step": 1, "ctx\n{"step": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        trainer.read_history(h)


@pytest.mark.parametrize("text, key", [
    ("[model.geps]\nwidth = [1, 2]", "model.geps.width"), ('[train]\nseed = "1"', "train.seed"),
    ("[train]\nouter_steps = 3.5", "train.outer_steps"), ('[model]\nnum_experts = "two"', "model.num_experts"),
    ("[solver]\nrtol = -1", "solver.rtol"), ("[solver]\nmax_steps = 0", "solver.max_steps"),
    ("[train]\nbatch_envs = -3", "train.batch_envs"), ("[adapt]\nsteps = -5", "adapt.steps"),
    ("[train]\nlr_weights = nan", "train.lr_weights"), ("[train]\nval_every = 0", "train.val_every"),
    ("[train]\nseed = 4294967296", "train.seed"), ("[model]\nsplit_context = 1", "model.split_context"),
    ("[model.ncf]\ntaylor_order = 3\n[model]\nbackbone = 'ncf'", "model.ncf.taylor_order"),
])
def test_bad_config_values_give_one_line(tmp_path, capsys, text, key):
    toml = tmp_path / "bad.toml"
    toml.write_text(text + "\n")
    assert main(["run", "--config", str(toml), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = _error_line(capsys)
    assert f"'{key}'" in err and "expected" in err and str(toml) in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_seeds_outside_the_range_are_refused(tmp_path, capsys, seed):
    assert main(["run", "--seed", seed, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "'train.seed'" in _error_line(capsys)


def test_config_values_keep_their_meaning():
    c = load_config("odebench-2", overrides={"train.seed": np.int64(3)})
    assert c.train.seed == 3 and type(c.train.seed) is int
    lr = TrainSettings(lr_weights=1).lr_weights
    assert lr == 1.0 and type(lr) is float


@pytest.mark.parametrize("text, words", [
    ("[train]\nnum_experts = 4", ["'train.num_experts'", "'num_experts' belongs in [model]"]),
    ("experts = 2", ["unknown config section or key 'experts'"]),
    ("outer_steps = 2", ["'outer_steps'", "belongs in a section: [train] outer_steps"]),
    ("[gate]\nevery = 1\nevry = 2", ["'gate.evry'", "valid in [gate]"]),
    ("[model]\nbackbone = 'coda'\n[model.geps]\nwidth = 8", ["[model.geps]", "does not apply", "'coda'"]),
    ("[model.geps]\nhidden = 8", ["'model.geps.hidden'", "'hidden' belongs in [model.shplrnn]"]),
    ("[train]\nseed = 1\nseed = 2", ["invalid TOML"]),
])
def test_misplaced_and_misspelled_keys_are_named(tmp_path, text, words):
    toml = tmp_path / "c.toml"
    toml.write_text(text + "\n")
    with pytest.raises(ValueError) as err:
        load_config("odebench-2", toml)
    for w in words:
        assert w in str(err.value), (w, str(err.value))
    assert str(toml) in str(err.value)


def test_changing_the_backbone_resets_its_own_settings():
    c = tiny_cfg()
    assert c.model.expert.width == 8
    ncf = c.override({"model.backbone": "ncf"})
    assert type(ncf.model.expert).__name__ == "NCFSettings" and ncf.model.expert.width == 64
    assert c.override({"model.backbone": "ncf", "model.ncf.taylor_order": 1}).model.expert.taylor_order == 1
    # a configuration survives its own TOML file
    assert Config.from_dict(ncf.to_dict()) == ncf


def test_hostile_command_lines_give_one_line_before_any_work(tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("mine")
    cases = [
        (["run", "--out", str(a_file), "--outer-steps", "1"], "--out " + str(a_file) + " is a file"),
        (["run", "--set", "train.outer_steps=1000000000"], "below 2**31"),
        (["reproduce", "table4", "--report", "--results", str(a_file)], "--results " + str(a_file) + " is a file"),
        (["adapt", "--model", "odebench-10b", "--data", "x.npz", "--out", str(a_file)], "is a file"),
    ]
    for argv, words in cases:
        assert main(argv) == 2, argv
        assert words in _error_line(capsys), argv
    assert a_file.read_text() == "mine"
    # --report with no cell JSON leaves an existing table alone
    table = tmp_path / "res" / "table4.md"
    table.parent.mkdir()
    table.write_text("| my table |")
    assert main(["reproduce", "table4", "--report", "--results", str(tmp_path / "res")]) == 2
    assert "nothing to report" in _error_line(capsys) and table.read_text() == "| my table |"
    # a cell JSON that is no cell: one line naming the file
    (tmp_path / "res" / "table4").mkdir()
    for bad in ("{}", "[1, 2]", "{trunc"):
        (tmp_path / "res" / "table4" / "lv-coda-single-s0.json").write_text(bad)
        assert main(["reproduce", "table4", "--report", "--results", str(tmp_path / "res")]) == 2
        assert "lv-coda-single-s0.json: not a" in _error_line(capsys)
    # a run's own folder as adapt's output, an existing file as the contexts export: refused
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text("{}")
    (run_dir / "contexts.npz").write_bytes(b"ctx")
    (run_dir / "model.npz").write_bytes(b"model")
    for model in (run_dir, run_dir / "model.npz"):
        assert main(["adapt", "--model", str(model), "--data", "x.npz", "--out", str(run_dir)]) == 2
        assert "the model's own run directory" in _error_line(capsys)
    np.savez(tmp_path / "run" / "contexts.npz", train=np.zeros((2, 3)))
    assert main(["contexts", str(run_dir), "--out", str(a_file)]) == 2
    assert "exists; name a new file" in _error_line(capsys) and a_file.read_text() == "mine"
    assert (run_dir / "metrics.json").read_text() == "{}"
    # zero adaptation steps are refused by the parser (it divided by them)
    assert main(["adapt", "--model", "odebench-10b", "--data", "x.npz", "--steps", "0"]) == 2
    assert "--steps: expected a positive integer, got '0'" in capsys.readouterr().err


def test_ambiguous_or_impossible_requests_are_refused(tiny_splits, tmp_path, monkeypatch, capsys):
    data = save_dataset(tmp_path / "tiny.npz", tiny_splits)
    assert main(["run", "--data", str(data), "--experts", "5", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "more than the 4 training environments" in _error_line(capsys)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "odebench-10b").mkdir()  # a folder named like the shipped model
    assert main(["adapt", "--model", "odebench-10b", "--data", str(data), "--out", str(tmp_path / "a")]) == 2
    assert "both a shipped model and a path here" in _error_line(capsys)


def test_cli_set_and_experts_auto_parse():
    import argparse

    from mixerdsr.cli import CLIError, parse_sets
    from mixerdsr.cli._run import _experts_arg

    assert parse_sets(["gate.every=12", "train.lr_weights=3e-4", "train.patience=4", "model.backbone=coda",
                        'data.source="x.npz"']) == {
        "gate.every": 12, "train.lr_weights": 3e-4, "train.patience": 4, "model.backbone": "coda",
        "data.source": "x.npz"}
    with pytest.raises(CLIError, match="KEY=VALUE"):
        parse_sets(["gate.every"])
    assert _experts_arg("3") == 3 and _experts_arg("auto") == "auto" and _experts_arg("AUTO:6") == "auto:6"
    from mixerdsr._config import load_config
    from mixerdsr.cli import build_parser
    from mixerdsr.cli._run import _run_overrides
    from mixerdsr.routing import policy_of

    def settings(*argv, preset="odebench-10a"):
        args = build_parser().parse_args(["run", "--preset", preset, *argv])
        return load_config(preset, None, _run_overrides(args))

    c = settings("--experts", "auto:4", "--time-budget", "1.5h")
    assert c.model.num_experts == 4 and c.gate.warm_start.grouping == "eigengap" and c.train.time_budget == 5400.0
    assert settings("--time-budget", "90").train.time_budget == 90.0
    for bad in ("0", "-3m", "soon", "infh"):
        with pytest.raises(SystemExit):
            settings("--time-budget", bad)
    c = settings("--experts", "auto")  # the configuration's M is the cap, its warm-up (100) is kept
    assert c.gate.warm_start.grouping == "eigengap" and c.model.num_experts == 10 and c.gate.warm_start.warmup == 100
    c = settings("--experts", "auto:3", "--outer-steps", "200", preset="lv")  # a preset without warm-up
    assert c.gate.warm_start.grouping == "eigengap" and c.model.num_experts == 3 and c.gate.router == "warm_start"
    assert policy_of(c).warmup == 66  # no warm-up configured: a third of the 200 outer steps (it chooses the count)
    c = settings("--experts", "5", "--set", "gate.pairing=greedy")
    assert c.model.num_experts == 5 and c.gate.pairing == "greedy"
    # any number of experts: each keeps the configuration's slice of the context (40 / 2 on odebench-2)
    for argv, m, d in [(("--experts", "6"), 6, 120), (("--experts", "auto:7"), 7, 140), (("--experts", "3"), 3, 60),
                       (("--experts", "3", "--context-size", "9"), 3, 9)]:
        c = settings(*argv, preset="odebench-2")
        assert (c.model.num_experts, c.model.context_size) == (m, d), argv
    c = settings("--experts", "4", "--set", "model.split_context=false", preset="odebench-2")
    assert c.model.context_size == 40  # unsplit: every expert sees the whole context already
    # a one-step map on a vector-field preset's strided grid: trained on every point unless the
    # stride is given; vector-field backbones and presets without a stride are untouched
    assert settings("--backbone", "shplrnn", preset="odebench-2").data.time_stride == 1
    assert settings("--backbone", "shplrnn", "--set", "data.time_stride=5", preset="odebench-2").data.time_stride == 5
    assert settings("--backbone", "coda", preset="odebench-2").data.time_stride == 5
    assert settings(preset="odebench-2").data.time_stride == 5
    for bad in ("0", "auto:0", "many", "auto:x"):
        with pytest.raises(argparse.ArgumentTypeError, match="auto"):
            _experts_arg(bad)


def test_run_starts_a_users_file_from_the_defaults_and_a_builtin_name_from_its_preset(tmp_path):
    from mixerdsr._config import load_config
    from mixerdsr.cli import build_parser
    from mixerdsr.cli._run import _preset_of, _run_overrides

    def config(*argv):
        args = build_parser().parse_args(["run", *argv])
        return _preset_of(args), load_config(_preset_of(args), args.config, _run_overrides(args))

    preset, c = config("--data", "mine.npz", "--experts", "6")  # no benchmark's tuning or time stride
    assert preset is None and c.data.time_stride == 1 and c.data.source == "mine.npz"
    assert (c.gate.router, c.gate.pairing, c.gate.warm_start.method) == ("warm_start", "overlap", "spectral")
    assert c.gate.reassign == 0 and c.gate.warm_start.seed_from == "shared"
    assert (c.model.num_experts, c.model.context_size) == (6, 120)  # the defaults' slice of 20 per expert
    preset, c = config()  # the default job: ODEBench-2 with the routing its preset measured
    assert preset == "odebench-2" and c.data.time_stride == 5 and c.gate.router == "from_start"
    assert c.gate.pairing == "greedy" and c.gate.reassign == 0.5
    assert config("--data", "lv")[0] == "lv" and config("--preset", "go", "--data", "lv")[0] == "go"
    assert config("--data", "x/Epilepsy2_TRAIN.ts")[0] == "epilepsy2" and config("--data", "s.data")[0] == "sccts"
    conf = tmp_path / "c.toml"
    conf.write_text("[train]\nouter_steps = 3\n")
    assert config("--config", str(conf), "--data", "lv")[0] is None  # the file is the whole configuration
