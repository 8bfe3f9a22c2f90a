"""Series datasets: the .ts reader, Epilepsy2 splits, the SCCTS file loader and generator."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mixerdsr.data import DataError, EnvData, load_dataset, save_dataset
from mixerdsr.data import _registry as registry
from mixerdsr.data import (
    SCCTS_CLASS_NAMES,
    SCCTS_SUPERFAMILY,
    generate_sccts,
    load_epilepsy2,
    load_sccts,
    read_ts,
)


def _shared_data() -> Path:
    env = os.environ.get("MIXERDSR_SHARED_DATA")
    return Path(env) if env else (Path(__file__).parents[1] / ".." / "shared" / "data").resolve()


def _shared_file(name: str) -> Path:
    p = _shared_data() / name
    if not p.exists():
        pytest.skip(f"shared data file {p} not found (set MIXERDSR_SHARED_DATA to the folder holding it)")
    return p


# ------------------------------------------------------------------ .ts reader
def test_read_shared_epilepsy2_file():
    path = _shared_file("Epilepsy2_TRAIN.ts")
    values, labels, header = read_ts(path)
    assert values.shape == (80, 178) and values.dtype == np.float64
    assert len(labels) == 80 and labels.count("0") == 40 and labels.count("1") == 40
    assert header["class_labels"] == ["0", "1"] and header["serieslength"] == 178
    # first values equal the text of the first series line
    first = next(line for line in path.read_text().splitlines() if line and not line.startswith(("@", "#")))
    vals, lab = first.rsplit(":", 1)
    assert lab.strip() == labels[0]
    np.testing.assert_array_equal(values[0, :5], [float(v) for v in vals.split(",")[:5]])
    np.testing.assert_array_equal(values[0], np.array(vals.split(","), dtype=float))


def _write(tmp_path, text, name="x.ts"):
    p = tmp_path / name
    p.write_text(text)
    return p


HEAD = "# comment\n@problemName toy\n@timeStamps false\n@univariate true\n@classLabel true a b\n@data\n"


def test_read_small_file_and_crlf(tmp_path):
    p = tmp_path / "ok.ts"
    p.write_bytes((HEAD + "1,2,3:a\n\n4,5,6:b\n").replace("\n", "\r\n").encode())
    v, labels, h = read_ts(p)
    np.testing.assert_array_equal(v, [[1, 2, 3], [4, 5, 6]])
    assert labels == ["a", "b"] and h["problemname"] == "toy" and h["n_series"] == 2


def test_read_multivariate_and_unlabelled(tmp_path):
    p = _write(tmp_path, "@univariate false\n@dimensions 2\n@classLabel false\n@data\n1,2,3:4,5,6\n7,8,9:1,1,1\n")
    v, labels, h = read_ts(p)
    assert v.shape == (2, 3, 2) and labels == []
    np.testing.assert_array_equal(v[0, :, 1], [4, 5, 6])


@pytest.mark.parametrize(
    "body, line, words",
    [
        ("1,2,3:a\n1,?,3:b\n", 8, ["missing", "'?'"]),
        ("1,2,3:a\n1,x,3:b\n", 8, ["comma-separated numbers", "'x'"]),
        ("1,2,3:a\n1,2:b\n", 8, ["3 values", "found 2"]),
        ("1,2,3:a\n1,2,3\n", 8, ["':<label>'"]),
        ("1,2,3:a\n1,2,3:c\n", 8, ["declared", "'c'"]),
        ("1,2,3:a\n1,2,3:4,5,6:b\n", 8, ["1 dimension"]),
        ("1,2,inf:a\n", 7, ["finite"]),
    ],
)
def test_malformed_series_lines_name_the_line(tmp_path, body, line, words):
    p = _write(tmp_path, HEAD + body)
    with pytest.raises(DataError) as err:
        read_ts(p)
    msg = str(err.value)
    assert str(p) in msg and f"line {line}:" in msg and "expected" in msg
    for w in words:
        assert w in msg


@pytest.mark.parametrize(
    "text, line, word",
    [
        ("@problemName x\nnot a header\n@data\n1,2:a\n", 2, "header line"),
        ("@univariate maybe\n@data\n1,2\n", 1, "@univariate true"),
        ("@timeStamps true\n@data\n(0,1),(1,2)\n", 1, "time-stamped"),
        ("@seriesLength 3\n@classLabel false\n@data\n1,2\n", 4, "@seriesLength"),
        ("@univariate true\n@classLabel false\n@data\n1,2:0\n", 4, "@classLabel true"),
    ],
)
def test_malformed_headers_name_the_line(tmp_path, text, line, word):
    p = _write(tmp_path, text)
    with pytest.raises(DataError, match=f"line {line}:.*{word}"):
        read_ts(p)


def test_missing_data_section(tmp_path):
    with pytest.raises(DataError, match="@data"):
        read_ts(_write(tmp_path, "@problemName x\n"))
    with pytest.raises(DataError, match="at least one series"):
        read_ts(_write(tmp_path, "@problemName x\n@data\n", "y.ts"))
    with pytest.raises(FileNotFoundError):
        read_ts(tmp_path / "nope.ts")


# ------------------------------------------------------------------ Epilepsy2
def test_epilepsy2_splits():
    path = _shared_file("Epilepsy2_TRAIN.ts")
    values, labels, _ = read_ts(path)
    splits, meta = load_epilepsy2(path)
    assert set(splits) == {"train", "test", "adapt_train", "adapt_test"}
    tr, ad = splits["train"], splits["adapt_train"]
    assert tr.x.shape == (60, 1, 178, 1) and ad.x.shape == (20, 1, 178, 1)
    np.testing.assert_array_equal(tr.x[:, 0, :, 0], values[:60])
    np.testing.assert_array_equal(ad.x[:, 0, :, 0], values[60:])
    np.testing.assert_array_equal(tr.t[0], np.arange(178.0))
    np.testing.assert_array_equal(np.concatenate([tr.family, ad.family]), [int(s) for s in labels])
    np.testing.assert_array_equal(splits["test"].x, tr.x)
    np.testing.assert_array_equal(splits["adapt_test"].x, ad.x)
    assert tr.family_names == ("0", "1") and meta["rows"]["adapt_train"] == [60, 80]
    json.dumps(meta)


def test_epilepsy2_test_path_and_standardize(tmp_path):
    path = _shared_file("Epilepsy2_TRAIN.ts")
    lines = path.read_text().splitlines()
    head = [ln for ln in lines if ln.startswith("@")]
    data = [ln for ln in lines if ln and not ln.startswith(("@", "#"))]
    test = _write(tmp_path, "\n".join(head + data[:5]) + "\n", "test.ts")
    splits, meta = load_epilepsy2(path, test_path=test, standardize=True)
    tr, ad = splits["train"], splits["adapt_train"]
    assert tr.n_envs == 60 and ad.n_envs == 5 and meta["test_source"] == str(test)
    np.testing.assert_allclose(tr.x.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(tr.x.std(axis=0), 1.0, atol=1e-9)
    mean, std = np.array(meta["standardization"]["mean"]), np.array(meta["standardization"]["std"])
    raw, _, _ = read_ts(test)
    np.testing.assert_allclose(ad.x[:, 0, :, 0], (raw - mean) / std)  # training statistics applied
    short_head = [h for h in head[:-2] if not h.lower().startswith("@serieslength")]
    bad = _write(tmp_path, "\n".join(short_head + ["@classLabel true 0 1", "@data", "1,2,3:0"]) + "\n", "bad.ts")
    with pytest.raises(DataError, match="length"):
        load_epilepsy2(path, test_path=bad)


def test_epilepsy2_roundtrip_npz(tmp_path):
    path = _shared_file("Epilepsy2_TRAIN.ts")
    splits, meta = load_epilepsy2(path)
    back = load_dataset(save_dataset(tmp_path / "e.npz", splits, meta))
    np.testing.assert_array_equal(back["adapt_train"].x, splits["adapt_train"].x)
    assert back["train"].env_names[0] == "row0"


# ------------------------------------------------------------------ SCCTS
def test_sccts_file_loader():
    path, _ = registry.find_data_file("synthetic_control.data")  # the shared copy, else the shipped one
    assert path is not None
    raw = np.loadtxt(path)
    splits, meta = load_sccts(path, standardize=False)
    assert list(splits) == ["train"]
    d = splits["train"]
    assert d.x.shape == (600, 1, 60, 1)
    np.testing.assert_array_equal(d.x[:, 0, :, 0], raw)
    np.testing.assert_array_equal(d.family, np.repeat(np.arange(6), 100))
    assert d.family_names == SCCTS_CLASS_NAMES
    assert meta["superfamily"][::100] == [0, 0, 1, 1, 2, 2]
    # the class blocks really are in the documented order
    t = np.arange(60)
    slopes = np.polyfit(t, raw.T, 1)[0].reshape(6, 100).mean(axis=1)
    assert slopes[2] > 0.2 and slopes[3] < -0.2 and abs(slopes[0]) < 0.05
    std = load_sccts(path)[0]["train"].x
    np.testing.assert_allclose(std.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(std.std(axis=0), 1.0, atol=1e-9)


def test_sccts_loader_errors(tmp_path):
    with pytest.raises(DataError, match="line 2.*4 values"):
        load_sccts(_write(tmp_path, "1 2 3 4\n1 2 3\n", "a.data"))
    with pytest.raises(DataError, match="divisible by 6"):
        load_sccts(_write(tmp_path, "1 2 3 4\n1 2 3 4\n", "b.data"))
    with pytest.raises(DataError, match="line 1.*'x'"):
        load_sccts(_write(tmp_path, "1 x 3\n", "c.data"))


@pytest.fixture(scope="module")
def gen():
    return generate_sccts(0, standardize=False)


def test_generator_shapes_and_meta(gen):
    splits, meta = gen
    d = splits["train"]
    assert isinstance(d, EnvData) and d.x.shape == (600, 1, 60, 1)
    np.testing.assert_array_equal(d.t[0], np.arange(60.0))
    np.testing.assert_array_equal(d.family, np.repeat(np.arange(6), 100))
    assert meta["superfamily"] == [SCCTS_SUPERFAMILY[f] for f in d.family]
    assert meta["seed"] == 0 and meta["standardize"] is False
    json.dumps(meta)


def test_generator_class_statistics(gen):
    splits, meta = gen
    y = splits["train"].x[:, 0, :, 0].reshape(6, 100, 60)
    t = np.arange(60.0)
    normal = y[0]
    assert abs(normal.mean() - 30.0) < 0.2
    assert abs(normal.std() - 2 * np.sqrt(3)) < 0.1  # s * std(U[-3, 3])
    assert normal.min() >= 24.0 and normal.max() <= 36.0
    slope = np.polyfit(t, y.reshape(600, 60).T, 1)[0].reshape(6, 100)
    assert np.all(slope[2] > 0) and np.all(slope[3] < 0)
    assert 0.2 < slope[2].mean() < 0.5 and -0.5 < slope[3].mean() < -0.2
    # residual of the trend equals the noise: g recovered from the stored parameters
    g = np.array(meta["class_params"]["increasing_g"])
    resid = y[2] - g[:, None] * t
    assert abs(resid.mean() - 30.0) < 0.2 and resid.min() >= 24.0 and resid.max() <= 36.0
    # shifts: a jump of x at t3 (the mean after t3 minus before, about x)
    for cls, key, sign in ((4, "upward", 1), (5, "downward", -1)):
        x = np.array(meta["class_params"][f"{key}_x"])
        t3 = np.array(meta["class_params"][f"{key}_t3"])
        assert t3.min() >= 20 and t3.max() <= 40 and 7.5 <= x.min() and x.max() <= 20
        jump = np.array([y[cls, i, t3[i]:].mean() - y[cls, i, :t3[i]].mean() for i in range(100)])
        assert np.all(sign * jump > 0)
        np.testing.assert_allclose(sign * jump, x, atol=3.0)
    # cyclic: strong autocorrelation at a half period (negative) and a full period (positive);
    # the noise classes have none
    def acf(z, lag):
        z = z - z.mean(axis=1, keepdims=True)
        return np.mean(np.sum(z[:, :-lag] * z[:, lag:], axis=1) / np.sum(z * z, axis=1))

    assert acf(y[1], 6) < -0.3 and acf(y[1], 12) > 0.2
    assert abs(acf(y[0], 6)) < 0.1
    period = np.array(meta["class_params"]["cyclic_T"])
    assert period.min() >= 10 and period.max() <= 15


def test_generator_seeding():
    a = generate_sccts(3, n_per_class=5)[0]["train"].x
    b = generate_sccts(3, n_per_class=5)[0]["train"].x
    c = generate_sccts(4, n_per_class=5)[0]["train"].x
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_generator_standardization():
    splits, meta = generate_sccts(1, n_per_class=20)
    x = splits["train"].x[:, 0, :, 0]
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(x.std(axis=0), 1.0, atol=1e-9)
    raw = generate_sccts(1, n_per_class=20, standardize=False)[0]["train"].x[:, 0, :, 0]
    st = meta["standardization"]
    assert st["kind"] == "per-time-column"
    np.testing.assert_allclose(x * np.array(st["std"]) + np.array(st["mean"]), raw)


def test_registry_generates_sccts():
    from mixerdsr.data import generate_dataset

    splits, meta = generate_dataset("sccts", seed=2)
    np.testing.assert_array_equal(splits["train"].x, generate_sccts(2)[0]["train"].x)
