"""Model files, adaptation with expert choice and confidence, `mixerdsr adapt`, shipped models."""

import dataclasses
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_cfg, tiny_ode_split

from mixerdsr import save_dataset
from mixerdsr._adapt_job import adapt_job
from mixerdsr._starts import _centres, _context_z
from mixerdsr.adaptation import _final_losses, adapt_new
from mixerdsr.checkpoint import CheckpointError, save_checkpoint
from mixerdsr.cli import main
from mixerdsr.inference import routes
from mixerdsr.mixer import build_model
from mixerdsr.models import (
    MODEL_FILE,
    TrainedModel,
    card_check,
    list_pretrained,
    load_model,
    load_pretrained,
    resolve_model,
    save_model,
)

STEPS, SCREEN = tiny_cfg().adapt.steps, tiny_cfg().adapt.screen_steps  # as `mixerdsr adapt` will use


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny MixER-2 as a model file: untrained weights (training is tested elsewhere), the
    gate routing envs 0, 1 (oscillators) to expert 0 and envs 2, 3 (decays) to expert 1."""
    cfg = tiny_cfg()
    split = tiny_ode_split(3, seed=0)
    model = build_model(cfg, 2, jax.random.PRNGKey(0))
    model = eqx.tree_at(lambda m: m.gate, model, jnp.zeros_like(model.gate).at[0].set(jnp.array([1.0, -1.0])))
    contexts = jnp.asarray(np.random.default_rng(0).normal(0.0, 0.3, (4, 4)).astype(np.float32))
    contexts = contexts.at[:, 0].set(jnp.array([1.0, 0.8, -0.9, -1.1]))
    tm = TrainedModel(model, contexts, cfg, 2, split.family, list(split.family_names), {"data": "tiny"})
    np.testing.assert_array_equal(tm.routes, [0, 0, 1, 1])
    d = tmp_path_factory.mktemp("run")
    save_model(d / MODEL_FILE, tm)
    return tm, d


def test_model_file_round_trip_and_errors(trained, tmp_path):
    tm, run_dir = trained
    back = load_model(run_dir)  # a run directory means its model.npz
    assert back.config == tm.config and back.state_size == 2 and back.card["data"] == "tiny"
    np.testing.assert_array_equal(back.contexts, tm.contexts)
    np.testing.assert_array_equal(back.model.gate, tm.model.gate)
    np.testing.assert_array_equal(back.family, [0, 0, 1, 1])
    assert back.family_names == ["oscillator", "decay"] and back.family_name(1) == "decay"
    np.testing.assert_array_equal(back.routes, tm.routes)
    # a model with a NaN weight is refused, not trusted
    broken = eqx.tree_at(lambda m: m.gate, tm.model, tm.model.gate.at[0, 0].set(jnp.nan))
    save_model(tmp_path / "nan.npz", TrainedModel(broken, tm.contexts, tm.config, 2, tm.family, tm.family_names, {}))
    with pytest.raises(CheckpointError, match="1 weight.*not finite"):
        load_model(tmp_path / "nan.npz")
    # a training checkpoint is not a model file; an unfinished run says how to finish it
    save_checkpoint(tmp_path / "checkpoint.npz", {"a": np.zeros(2)}, tm.config.to_dict())
    with pytest.raises(CheckpointError, match="not a mixerdsr model file"):
        load_model(tmp_path / "checkpoint.npz")
    with pytest.raises(CheckpointError, match="--resume"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="neither a pretrained model"):
        resolve_model(tmp_path / "nothing-here")
    with pytest.raises(ValueError, match="no pretrained model 'nope'"):
        load_pretrained("nope")


def test_adaptation_keeps_each_envs_best_expert_and_says_how_clear_it_is(trained, tiny_splits):
    tm, _ = trained
    ad = tiny_splits["adapt_train"]
    a = adapt_new(tm.model, tm.contexts, ad.x, ad.t, steps=STEPS, screen_steps=SCREEN, lr=1e-2)
    e = np.arange(ad.n_envs)
    assert a.contexts.shape == (4, 4) and a.scores.shape == (4, 2)
    # (M = 2, keep = 2: both experts' best fits are refined) the chosen expert has the lowest
    # score, the runner-up the next; confidence compares them
    np.testing.assert_array_equal(a.experts, np.argmin(a.scores, 1))
    two = np.isfinite(a.scores).all(1)
    np.testing.assert_array_equal(a.runner_up[two], 1 - a.experts[two])
    want = 1 - a.scores[e, a.experts] / a.scores[e, np.maximum(a.runner_up, 0)]
    np.testing.assert_allclose(a.confidence[two], want[two], rtol=1e-6)
    assert np.all((a.confidence >= 0) & (a.confidence <= 1))
    # where no fit ended with the other expert, it is fitted with its route forced: a runner-up
    # and a confidence below 1 for every env (the gate cannot be trusted to have routed right)
    np.testing.assert_array_equal(a.runner_up_forced, ~two)
    assert np.all(a.runner_up == 1 - a.experts) and np.all(a.confidence < 1)
    # the loss reported is the kept context's, and it is the chosen expert's score
    np.testing.assert_allclose(a.loss, _final_losses(tm.model, a.contexts, ad.x, ad.t, tm.config.solver), rtol=1e-5)
    np.testing.assert_allclose(a.loss, a.scores[e, a.experts], rtol=1e-5)
    np.testing.assert_array_equal(a.experts, routes(tm.model, a.contexts))
    # refining the runner-up too can only lower the kept loss (the best one's fit is the same)
    one = adapt_new(tm.model, tm.contexts, ad.x, ad.t, steps=STEPS, screen_steps=SCREEN, keep=1, lr=1e-2)
    assert np.all(a.loss <= one.loss * (1 + 1e-6))
    with pytest.raises(ValueError, match="keep must be"):
        adapt_new(tm.model, tm.contexts, ad.x, ad.t, keep=0)
    # a prior on contexts in the choice: among the same refined fits, a huge one keeps the fit
    # nearest its expert's training contexts, so no env's kept context is farther than before
    near = adapt_new(tm.model, tm.contexts, ad.x, ad.t, steps=STEPS, screen_steps=SCREEN, lr=1e-2, choice_prior=1e9)
    z_near = _context_z(tm.model, np.asarray(tm.contexts), near.contexts, near.experts)
    z_loss = _context_z(tm.model, np.asarray(tm.contexts), a.contexts, a.experts)
    assert np.all(z_near <= z_loss + 1e-6) and np.any(z_near < z_loss - 0.1)  # here it changes the choice
    np.testing.assert_array_equal(near.experts, routes(tm.model, near.contexts))
    # more starts (every expert's K-means centres beside its mean): a valid fit whose reported
    # loss is the kept context's
    more = adapt_new(tm.model, tm.contexts, ad.x, ad.t, steps=STEPS, screen_steps=SCREEN, lr=1e-2, starts_per_expert=2)
    np.testing.assert_array_equal(more.experts, routes(tm.model, more.contexts))
    np.testing.assert_allclose(more.loss, _final_losses(tm.model, more.contexts, ad.x, ad.t, tm.config.solver), rtol=1e-5)


def test_context_z_and_kmeans_centres():
    # two groups: centres of a K-means into 2 land on the groups' means; into more than the
    # rows, every row is its own centre
    c = np.array([[0.0, 0.0], [0.2, 0.0], [0.0, 0.2], [5.0, 5.0], [5.2, 5.0], [5.0, 5.2]])
    got = sorted(map(tuple, np.round(_centres(c, 2), 6)))
    np.testing.assert_allclose(got, [c[:3].mean(0), c[3:].mean(0)], atol=1e-6)
    assert len(_centres(c[:2], 5)) == 2 and _centres(c, 0) == []


def test_cli_adapt_round_trip(trained, tiny_splits, tmp_path, capsys):
    tm, run_dir = trained
    data = save_dataset(tmp_path / "new.npz", {k: tiny_splits[k] for k in ("adapt_train", "adapt_test")})
    out = tmp_path / "adapted"
    assert main(["adapt", "--model", str(run_dir), "--data", str(data), "--out", str(out), "--steps", str(STEPS),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "forecast of adapt_test: relMSE" in printed and "resembles" in printed
    # --set changes adaptation settings only, each checked like a configuration's
    for bad, words in ((["--set", "train.lr_weights=1"], "only adaptation settings"),
                       (["--set", "adapt.context_penalty=-1"], "adapt.context_penalty")):
        assert main(["adapt", "--model", str(run_dir), "--data", str(data), "--out", str(tmp_path / "no"),
                     *bad, "--quiet"]) == 2
        assert words in capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["fitted_split"] == "adapt_train" and len(m["environments"]) == 4
    for r in m["environments"]:
        assert {"expert", "runner_up", "confidence", "family_by_route", "family_by_context", "trusted"} <= set(r)
        assert r["family_by_route_name"] in ("oscillator", "decay")
    assert 0.0 <= m["family_agreement"]["by_context"] <= 1.0
    assert len(m["warnings"]) == sum(not r["trusted"] for r in m["environments"])
    with np.load(out / "contexts.npz") as z:
        assert z["adapt"].shape == (4, 4) and z["train"].shape == (4, 4)
    assert (out / "adapt_forecast.png").exists() and (out / "adapt_contexts.png").exists()
    # with the model's own test error known, a forecast far worse than it is not vouched for:
    # by the typical trajectory's relMSE when the card has it (a run's), else by Eq. 9 (a shipped model's)
    new = {k: tiny_splits[k] for k in ("adapt_train", "adapt_test")}
    for card, key, floor, words in (({"test": {"median_traj_rel_mse": 1e-4, "rel_mse": 1.0}},
                                      "forecast_median_traj_rel_mse", 0.1,
                                      "x the model's test typical trajectory's relMSE (median) 0.0001"),
                                     ({"test_rel_mse": 1e-4}, "forecast_rel_mse", 0.1, "x the model's test relMSE 0.0001")):
        sure = dataclasses.replace(tm, card={**tm.card, "metrics": card})
        m3 = adapt_job(sure, new, None, source="new", steps=STEPS)
        for r in m3["environments"]:
            far = r[key] > floor
            assert far == (not r["trusted"] and any(words in w for w in r["why_not"])), (key, r)
        assert any(r[key] > floor for r in m3["environments"])  # the check is exercised
    # a file with only a train split is fitted as new environments too (no forecast without test)
    only = save_dataset(tmp_path / "one.npz", {"train": tiny_splits["adapt_train"]})
    m2 = adapt_job(tm, {"train": tiny_splits["adapt_train"]}, None, source=str(only), steps=STEPS)
    assert m2["fitted_split"] == "train" and "forecast" not in m2
    # data of another state dimension: the error names the file and key
    x3 = tiny_splits["adapt_train"]
    bad = save_dataset(tmp_path / "bad.npz", {"adapt_train": x3.replace(x=np.concatenate([x3.x, x3.x[..., :1]], -1))})
    assert main(["adapt", "--model", str(run_dir), "--data", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "bad.npz" in err and "adapt_train/x" in err and "dimension 2" in err


def test_shipped_model_reproduces_its_card(capsys):
    names = [n for n, _ in list_pretrained()]
    assert "odebench-10b" in names
    assert main(["pretrained", "list"]) == 0 and "odebench-10b" in capsys.readouterr().out
    tm = load_pretrained("odebench-10b")
    assert tm.model.n_experts == 10 and tm.contexts.shape == (160, 40) and tm.state_size == 2
    assert len(tm.family_names) == 10 and tm.routes.shape == (160,)
    assert {"command", "seed", "training_seconds", "machine", "metrics"} <= set(tm.card)
    expected, got = card_check(tm)
    np.testing.assert_allclose(got, expected, rtol=0.05, atol=0.01)
