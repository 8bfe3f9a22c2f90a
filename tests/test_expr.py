"""The safe expression language: whitelist, error messages, numerics on numpy / jax / scipy path."""

import builtins

import numpy as np
import pytest

from mixerdsr.data import DataError
from mixerdsr.data._expr import check_expression, compile_rhs


@pytest.mark.parametrize(
    "expr, token",
    [
        ("__import__('os')", "__import__"),
        ("__import__('os').system('echo pwned')", "__import__"),
        ("x0.real", "x0.real"),
        ("y0", "y0"),
        ("c9", "c9"),
        ("x0 if 1 else 2", "x0 if 1 else 2"),
        ("x0 < 1", "x0 < 1"),
        ("x0 and x1", "x0 and x1"),
        ("lambda: 1", "lambda: 1"),
        ("x0[0]", "x0[0]"),
        ("'abc'", "'abc'"),
        ("sin(x=x0)", "x=x0"),
        ("sin(x0, x1)", "sin(x0, x1)"),
        ("open('f')", "open"),
        ("x0 // 2", "//"),
        ("x0 % 2", "%"),
        ("True", "True"),
        ("1j", "1j"),
        ("[x0]", "[x0]"),
        ("(x0)(1)", "x0"),
        ("pi", "pi"),
        ("x2", "x2"),
        ("X0", "X0"),
        ("x01", "x01"),
        ("~x0", "~x0"),
        ("np.sin(x0)", "np.sin"),
    ],
)
def test_rejects_with_token_and_expression(expr, token):
    with pytest.raises(DataError) as info:
        compile_rhs([expr, "x0"], n_states=2, n_params=1)
    msg = str(info.value)
    assert token in msg
    assert repr(expr) in msg or expr in msg


@pytest.mark.parametrize("bad", ["", "   ", "(x0", "x0 +", "x0 = 1", "import os"])
def test_rejects_syntax_errors(bad):
    with pytest.raises(DataError, match="expression"):
        check_expression(bad, 2, 1)


def test_rejects_non_string_and_wrong_count():
    with pytest.raises(DataError):
        compile_rhs([1.0, "x0"], 2, 0)
    with pytest.raises(DataError, match="expected 2 expressions"):
        compile_rhs(["x0"], 2, 0)
    with pytest.raises(DataError):
        compile_rhs("x0", 1, 0)


def test_undeclared_parameter_message_lists_declared():
    with pytest.raises(DataError, match=r"'c9' is not declared.*c0\.\.c0"):
        compile_rhs(["c9*x0"], 1, 1)
    with pytest.raises(DataError, match=r"'c0' is not declared.*none"):
        compile_rhs(["c0*x0"], 1, 0)


def test_never_evaluates_text(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("eval/exec must never be called")

    monkeypatch.setattr(builtins, "eval", boom)
    monkeypatch.setattr(builtins, "exec", boom)
    f = compile_rhs(["x1", "-c0*sin(x0)**2"], 2, 1)
    assert np.allclose(f([0.3, 0.2], [2.0]), [0.2, -2.0 * np.sin(0.3) ** 2])
    with pytest.raises(DataError):
        compile_rhs(["__import__('os').system('echo pwned')", "x0"], 2, 0)


def test_accepts_and_evaluates_correctly():
    f = compile_rhs(["x1", "-c0*sin(x0)**2"], 2, 1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 2))
    c = np.array([1.7])
    out = f(x, c)
    assert out.shape == (5, 2)
    np.testing.assert_allclose(out[:, 0], x[:, 1])
    np.testing.assert_allclose(out[:, 1], -1.7 * np.sin(x[:, 0]) ** 2)


def test_all_functions_and_precedence():
    exprs = ["sin(x0) + cos(x0) + tan(x0)", "exp(x0) + log(x1) + sqrt(x1)", "abs(-x0) + tanh(x0)",
             "-x0**2", "2**-1 + +x1", "x0/x1/2", "c0 - c1 - 1e-3", "(x0 + 1)*(x1 - 1)"]
    f = compile_rhs(exprs, 8, 2)
    x = np.array([0.4, 1.5, 0, 0, 0, 0, 0, 0])
    c = np.array([3.0, 0.5])
    x0, x1 = 0.4, 1.5
    want = [np.sin(x0) + np.cos(x0) + np.tan(x0), np.exp(x0) + np.log(x1) + np.sqrt(x1), abs(x0) + np.tanh(x0),
            -(x0**2), 0.5 + x1, x0 / x1 / 2, 3.0 - 0.5 - 1e-3, (x0 + 1) * (x1 - 1)]
    np.testing.assert_allclose(f(x, c), want, rtol=1e-14)
    np.testing.assert_allclose(f.scipy_fun(c)(0.0, x), want, rtol=1e-14)


def test_constant_rhs_broadcasts():
    f = compile_rhs(["1.5", "x0"], 2, 0)
    out = f(np.zeros((3, 2)))
    assert out.shape == (3, 2)
    np.testing.assert_allclose(out[:, 0], 1.5)


def test_scipy_path_matches_array_path_and_falls_back():
    f = compile_rhs(["cos(x0)/tan(x1)", "sin(x0)*(c0*sin(x1)**2 + cos(x1)**2)"], 2, 1)
    g = f.scipy_fun([4.2])
    rng = np.random.default_rng(1)
    for _ in range(20):
        y = rng.uniform(-2, 2, size=2)
        np.testing.assert_allclose(g(0.0, y), f(y, [4.2]), rtol=1e-13)
    # division by zero: numpy semantics (inf), no exception
    out = g(0.0, np.array([0.0, 0.0]))
    assert np.isinf(out[0])
    # negative base with fractional power: nan, not complex
    h = compile_rhs(["x0**0.5"], 1, 0).scipy_fun()
    assert np.isnan(h(0.0, np.array([-1.0]))[0])


def test_shape_checks():
    f = compile_rhs(["x1", "-c0*x0"], 2, 1)
    with pytest.raises(ValueError, match="last axis of size 2"):
        f(np.zeros(3), [1.0])
    with pytest.raises(ValueError, match="last axis of size 1"):
        f(np.zeros(2), [1.0, 2.0])
    with pytest.raises(ValueError):
        f.scipy_fun([1.0, 2.0])


def test_jax_path_jit_and_grad():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    f = compile_rhs(["x1", "-c0*sin(x0)**2 - c1*x1"], 2, 2)
    x = jnp.array([0.3, -0.2])
    c = jnp.array([2.0, 0.1])
    out = jax.jit(lambda x, c: f(x, c, xp=jnp))(x, c)
    np.testing.assert_allclose(np.asarray(out), f(np.asarray(x, float), np.asarray(c, float)), rtol=1e-6)
    # d/dx0 of the second component: -c0 * 2 sin(x0) cos(x0)
    jac = jax.jacfwd(lambda x: f(x, c, xp=jnp))(x)
    np.testing.assert_allclose(float(jac[1, 0]), -2.0 * 2 * np.sin(0.3) * np.cos(0.3), rtol=1e-5)
    np.testing.assert_allclose(float(jac[1, 1]), -0.1, rtol=1e-5)
    # vmap over a batch of states
    xs = jnp.stack([x, 2 * x])
    assert jax.vmap(lambda s: f(s, c, xp=jnp))(xs).shape == (2, 2)


# ---------------------------------------------------------------------------------------------
# Numbers-only sub-expressions are checked once, in floats, at parse time
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "expr, part, why",
    [
        ("9**9**9**9*x0", "9**9**9", "overflows"),
        ("x0**(9**9**9)", "9**9**9", "overflows"),
        ("x0 + 10.0**400", "10.0**400", "overflows"),
        ("x0 + 1e308*10", "1e308*10", "overflows"),
        ("x0 + exp(1000)", "exp(1000)", "overflows"),
        ("x0/(1/0)", "1/0", "divides by zero"),
        ("x0 + 0**-1", "0**-1", "divides by zero"),
        ("x0 + log(0)", "log(0)", "domain"),
        ("x0 + sqrt(-1)", "sqrt(-1)", "domain"),
        ("x0 + (-8)**0.5", "(-8)**0.5", "not a real number"),
        ("x0 + " + "9" * 400, "999", "too large"),
        ("x0 + 0x" + "f" * 300, "0xfff", "too large"),
    ],
)
def test_bad_constant_subexpressions_are_refused(expr, part, why):
    with pytest.raises(DataError, match="constant") as err:
        check_expression(expr, 1, 0)
    msg = str(err.value)
    assert why in msg and part in msg
    assert f"expression {expr[:30]}" in msg.replace("'", "")


def test_valid_constant_subexpressions_evaluate_as_written():
    f = compile_rhs(["2**0.5*x0 + 10**-400", "x0**-1 - exp(1)*(-2)**3 + log(1e-300)"], 2, 0)
    x = np.array([0.7, 0.0])
    want = [2**0.5 * 0.7, 0.7**-1 + np.e * 8 + np.log(1e-300)]
    np.testing.assert_allclose(f(x), want, rtol=1e-14)
    np.testing.assert_allclose(f.scipy_fun()(0.0, x), want, rtol=1e-14)


def test_power_tower_cannot_hang(tmp_path):
    """Run in a child with a timeout (a regression to integer powers would never finish); the child
    loads only the expression module, not the whole package, so it starts quickly."""
    import subprocess
    import sys
    from pathlib import Path

    import mixerdsr.data

    data_dir = Path(mixerdsr.data.__file__).parent
    code = f"""
import sys, types
for name, path in [("mixerdsr", {str(data_dir.parent)!r}), ("mixerdsr.data", {str(data_dir)!r})]:
    m = types.ModuleType(name); m.__path__ = [path]; sys.modules[name] = m
from mixerdsr.data._expr import check_expression
from mixerdsr.data._envdata import DataError
try:
    check_expression("9**9**9**9**9", 1, 0)
except DataError as err:
    print(err)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert "9**9**9**9**9" in out.stdout and "overflows" in out.stdout
