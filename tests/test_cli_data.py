"""`mixerdsr data ...`, the dataset registry and the overview plot."""

import subprocess
import sys

import numpy as np
import pytest

from mixerdsr import generate_dataset, list_datasets
from mixerdsr.cli import build_parser, main
from mixerdsr.data import DataError, EnvData, load_dataset, read_meta, resolve_dataset

SMALL_TOML = """
name = "tiny"
description = "two small families"

[protocol]
seed = 11
steps = 50
train = {envs = 2, trajectories = 3}
test = {envs = 2, trajectories = 2}
adapt_train = {envs = 1, trajectories = 1}

[[family]]
id = "osc"
name = "Harmonic oscillator"
rhs = ["x1", "-c0*x0"]
params = [2.0]
ics = [[1.0, 0.0], [0.5, 0.5]]
horizon = 6.0

[[family]]
name = "Pendulum"
rhs = ["x1", "-c0*sin(x0) - c1*x1"]
params = [1.0, 0.1]
ics = [[-1.0, 0.0], [0.3, 0.8]]
horizon = 8
"""


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------

def test_list_datasets_names():
    names = [n for n, _ in list_datasets()]
    for n in ("odebench-2", "odebench-10a", "odebench-10b", "lv", "go", "sm", "sccts"):
        assert n in names
    assert all(isinstance(d, str) and d and "\n" not in d for _, d in list_datasets())


def test_generate_dataset_unknown_and_paths(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        generate_dataset("nope")
    with pytest.raises(FileNotFoundError):
        generate_dataset(tmp_path / "missing.toml")
    p = tmp_path / "tiny.toml"
    p.write_text(SMALL_TOML)
    splits, meta = generate_dataset(p, seed=3)
    assert set(splits) == {"train", "test", "adapt_train"}
    assert splits["train"].x.shape == (4, 3, 50, 2) and meta["seed"] == 3
    assert meta["name"] == "tiny"
    same, _ = resolve_dataset(p, seed=3)
    np.testing.assert_array_equal(same["test"].x, splits["test"].x)
    # recorded data is not a generator; the run resolves it all the same
    npz = tmp_path / "d.npz"
    from mixerdsr import save_dataset

    save_dataset(npz, splits)
    with pytest.raises(DataError, match="recorded data, not a generator"):
        generate_dataset(npz)
    np.testing.assert_array_equal(resolve_dataset(npz)[0]["test"].x, splits["test"].x)


def test_generate_dataset_classic_seed():
    a, meta = generate_dataset("sm", seed=4)
    assert meta["seed"] == 4 and meta["name"] == "sm"
    np.testing.assert_array_equal(a["test"].x[0, 0, 0], np.random.RandomState(4).uniform(0, 3, 2))


def test_sccts_is_lazy():
    try:
        import mixerdsr.data._series  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="sccts"):
            generate_dataset("sccts")
    else:  # pragma: no cover - depends on the other module being present
        splits, _ = generate_dataset("sccts", seed=0)
        assert splits


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def test_parser_structure():
    parser = build_parser()
    assert hasattr(parser, "subparsers")
    args = parser.parse_args(["data", "generate", "lv", "--out", "x.npz", "--seed", "3"])
    assert args.name == "lv" and args.seed == 3 and callable(args.func)


def test_data_list(capsys):
    code, out, _ = _run(["data", "list"], capsys)
    assert code == 0
    for n in ("odebench-2", "odebench-10a", "odebench-10b", "lv", "go", "sm", "sccts"):
        assert any(line.split()[0] == n for line in out.splitlines())


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["data", "generate", "nope", "--out", "{tmp}/a.npz"], "unknown dataset"),
        (["data", "generate", "--families", "{tmp}/missing.toml", "--out", "{tmp}/a.npz"], "missing.toml"),
        (["data", "generate", "--families", "{tmp}/bad.toml", "--out", "{tmp}/a.npz"], "invalid TOML"),
        (["data", "generate", "--families", "{tmp}/evil.toml", "--out", "{tmp}/a.npz"], "__import__"),
        (["data", "generate", "--out", "{tmp}/a.npz"], "exactly one"),
        (["data", "generate", "lv", "--families", "{tmp}/bad.toml", "--out", "{tmp}/a.npz"], "exactly one"),
        (["data", "show", "{tmp}/nothere.npz"], "nothere.npz"),
        (["data", "show", "{tmp}/garbage.npz"], "garbage.npz"),
    ],
)
def test_bad_input_exit_2_one_line(argv, needle, tmp_path, capsys):
    (tmp_path / "bad.toml").write_text('name = "x"\n[[family]\n')
    (tmp_path / "evil.toml").write_text(SMALL_TOML.replace('"-c0*x0"', '''"__import__('os').system('ls')"'''))
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file")
    code, out, err = _run([a.replace("{tmp}", str(tmp_path)) for a in argv], capsys)
    assert code == 2
    line = _one_error_line(err)
    assert needle in line
    assert not (tmp_path / "a.npz").exists()


def test_usage_errors_exit_2(capsys):
    assert main(["data", "generate", "lv"]) == 2  # --out missing (argparse)
    assert main(["data", "generate", "lv", "--out", "x.npz", "--seed", "-1"]) == 2
    assert main(["data"]) == 2
    assert main(["frobnicate"]) == 2
    capsys.readouterr()


def test_generate_show_round_trip(tmp_path, capsys):
    toml = tmp_path / "tiny.toml"
    toml.write_text(SMALL_TOML)
    out = tmp_path / "tiny.npz"
    code, stdout, err = _run(["data", "generate", "--families", str(toml), "--seed", "5", "--out", str(out)], capsys)
    assert code == 0, err
    assert out.exists() and "train (4, 3, 50, 2)" in stdout
    back = load_dataset(out)
    direct, meta = generate_dataset(toml, seed=5)
    for sp in direct:
        np.testing.assert_array_equal(back[sp].x, direct[sp].x)
        np.testing.assert_array_equal(back[sp].t, direct[sp].t)
        np.testing.assert_array_equal(back[sp].family, direct[sp].family)
        assert back[sp].params == direct[sp].params
    assert read_meta(out)["seed"] == 5 and read_meta(out)["env_params"] == meta["env_params"]

    png = tmp_path / "over.png"
    code, stdout, err = _run(["data", "show", str(out), "--plot", str(png), "--max-envs", "-1"], capsys)
    assert code == 0, err
    assert "train: x (4, 3, 50, 2)" in stdout
    assert "Harmonic oscillator" in stdout and "Pendulum" in stdout
    assert "params (1.8)" in stdout and "params (0.9, 0.09)" in stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_generate_builtin_with_seed(tmp_path, capsys):
    out = tmp_path / "lv"  # suffix added
    code, _, err = _run(["data", "generate", "sm", "--seed", "2", "--out", str(out), "--quiet"], capsys)
    assert code == 0, err
    assert read_meta(tmp_path / "lv.npz")["seed"] == 2


def test_console_entry_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mixerdsr.cli", "data", "generate", "nope", "--out",
                        str(tmp_path / "x.npz")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: unknown dataset") and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------
# plot
# ---------------------------------------------------------------------------------------------

def test_plot_overview_no_global_state(tmp_path):
    import matplotlib

    from mixerdsr.plots import plot_dataset_overview

    before = dict(matplotlib.rcParams)
    backend = matplotlib.get_backend() if "matplotlib.pyplot" in sys.modules else None
    rng = np.random.default_rng(0)
    one_d = EnvData(rng.normal(size=(3, 2, 10, 1)), np.tile(np.arange(10.0), (3, 1)), np.array([0, 1, 1]))
    p1 = plot_dataset_overview(one_d, tmp_path / "a.png", max_traj=2)
    seven = EnvData(rng.normal(size=(4, 3, 10, 7)), np.tile(np.arange(10.0), (4, 1)), np.array([-1, 0, 0, 2]),
                    family_names=("a", "b", "c"))
    p2 = plot_dataset_overview({"test": seven}, tmp_path / "sub" / "b.png", max_traj=5)
    for p in (p1, p2):
        assert p.read_bytes()[:4] == b"\x89PNG"
    assert dict(matplotlib.rcParams) == before
    if backend is not None:
        assert matplotlib.get_backend() == backend
    with pytest.raises(ValueError, match="split"):
        plot_dataset_overview({"test": seven}, tmp_path / "c.png", split="train")


def test_presets_say_what_they_are_and_data_show_takes_a_builtin_name(capsys):
    from mixerdsr.cli import main

    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 8 and all(len(line.split(maxsplit=1)) == 2 for line in lines)  # a name and a line
    assert any(line.startswith("lv ") and "Table 4" in line for line in lines)
    assert main(["data", "show", "lv", "--no-plot"]) == 0  # a built-in name, not only a file
    assert "train: x (9, 4, 20, 2)" in capsys.readouterr().out
