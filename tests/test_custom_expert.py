"""A user's own expert, defined here and nowhere in the library, trains and adapts through the
public API like the built-in backbones."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import Array, Float, PRNGKeyArray

import mixerdsr as mx
from mixerdsr.experts import BACKBONES
from mixerdsr.training import init_state


class _AffineField(eqx.Module):
    a: Array
    b: Array

    def __call__(self, t, x, args=None):
        return self.a @ x + self.b


@dataclasses.dataclass(frozen=True)
class LinearSettings(mx.ExpertSettings):
    scale: float = 0.1


class LinearField(mx.AbstractVectorFieldExpert):
    """``dx/dt = (A + sum_k c_k A_k) x + B c``: a context-modulated linear vector field."""

    Settings: ClassVar[type[mx.ExpertSettings]] = LinearSettings

    a: Float[Array, "D D"]
    a_ctx: Float[Array, "D D c"]
    b: Float[Array, "D c"]
    state_size: int = eqx.field(static=True)
    context_size: int = eqx.field(static=True)

    def __init__(self, state_size: int, context_size: int, scale: float = LinearSettings.scale, *, key: PRNGKeyArray):
        k1, k2, k3 = jax.random.split(key, 3)
        self.state_size, self.context_size = state_size, context_size
        d, c = state_size, context_size
        self.a = scale * jax.random.normal(k1, (d, d))
        self.a_ctx = scale * jax.random.normal(k2, (d, d, c))
        self.b = scale * jax.random.normal(k3, (d, c))

    def specialise(self, ctx, ctx_pool=None):
        return _AffineField(self.a + self.a_ctx @ ctx, self.b @ ctx)


@pytest.fixture
def linear_backbone():
    mx.register_expert("linear-test", LinearField)
    yield "linear-test"
    BACKBONES.pop("linear-test")


def test_a_new_expert_subclass_trains_and_adapts(linear_backbone, tiny_splits):
    with pytest.raises(ValueError, match="backbone"):
        mx.ModelSettings(backbone="linear-untested")
    # its own settings come from the table [model.<name>] (an unknown key there is refused)
    with pytest.raises(ValueError, match="'model.linear-test.scael'"):
        mx.Config().override({"model.backbone": linear_backbone, "model.linear-test.scael": 1.0})
    # MixER-1 (the bare meta-learner): every env is routed to the one expert whatever the gate,
    # so no gate update (and no all-expert loss pass) runs, and the gate never changes
    cfg = mx.Config().override({
        "model.backbone": linear_backbone, "model.linear-test.scale": 0.2, "model.num_experts": 1,
        "model.context_size": 4, "train.inner_steps": 3, "train.outer_steps": 6, "train.val_every": 3,
        "train.lr_weights": 1e-2, "train.lr_contexts": 1e-2, "adapt.steps": 15,
    })
    assert cfg.model.expert == LinearSettings(scale=0.2)
    tr = tiny_splits["train"]
    res = mx.train(cfg, tr, progress=False)
    assert isinstance(res.model.experts, LinearField) and res.model.experts.a.shape == (1, 2, 2)
    # the setting reaches __init__: the same draws, twice the scale
    k = jax.random.PRNGKey(0)
    np.testing.assert_allclose(LinearField.from_settings(2, 4, cfg.model.expert, key=k).b,
                               2 * LinearField.from_settings(2, 4, LinearSettings(0.1), key=k).b, rtol=1e-6)
    h = res.history
    assert h[-1]["weight_loss"] < h[0]["weight_loss"]  # it learns
    assert not any(x["gate_updates"] for x in h)
    np.testing.assert_array_equal(res.state.model.gate, init_state(cfg, 4, 2).model.gate)
    ad = tiny_splits["adapt_train"]
    ctx, hist = mx.adapt_contexts(res.model, ad.x, ad.t, steps=15, lr=1e-2)
    assert ctx.shape == (4, 4) and bool(jnp.all(hist[:, -1] <= hist[:, 0]))
    assert bool(jnp.all(hist[:, -1] < hist[:, 0]))  # every new env's fit improves


def test_register_expert_refuses_non_experts_and_taken_names():
    with pytest.raises(TypeError, match="AbstractExpert"):
        mx.register_expert("nope", dict)
    with pytest.raises(ValueError, match="already used"):
        mx.register_expert("geps", LinearField)
