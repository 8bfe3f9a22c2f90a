"""A small, safe expression language for ODE right-hand sides.

An expression is ordinary arithmetic in the states ``x0, x1, ...`` and the parameters
``c0, c1, ...`` of one family, e.g. ``"-c0*sin(x0)**2 + x1/c1"``. The grammar is a whitelist:

- numbers (int or float literals; no booleans, strings or complex numbers);
- the declared names ``x0 .. x{D-1}`` and ``c0 .. c{P-1}`` (nothing else);
- unary ``+`` and ``-``; binary ``+ - * / **``; parentheses;
- calls with exactly one positional argument to ``sin cos tan exp log sqrt abs tanh``.

The text is parsed with :func:`ast.parse` (``mode="eval"``) and every node is checked against
that whitelist; the text itself is never evaluated. Anything else (attributes, subscripts,
lambdas, comparisons, conditional expressions, keywords, other names...) raises
:class:`~mixerdsr.data.DataError` naming the offending token and the expression.

Every sub-expression made of numbers only (e.g. ``2**0.5`` or ``9**9**9``) is evaluated once at
parse time, in floating point (never with Python's unbounded integers, so it cannot hang or exhaust
memory): one that overflows, divides by zero, leaves a function's domain or is not a real number
raises :class:`~mixerdsr.data.DataError` naming it. The evaluators themselves are not changed by this
check (no folding), so valid expressions evaluate exactly as written.

A checked expression is turned into a tree of closures that evaluates with any array module
passed as ``xp`` (``numpy`` for the scipy reference generator, ``jax.numpy`` inside JAX code),
plus a fast scalar path (Python floats and :mod:`math`) used by :func:`scipy.integrate.solve_ivp`.
"""

from __future__ import annotations

import ast
import math
import operator
import re
import typing
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._envdata import DataError

__all__ = ["ALLOWED_FUNCTIONS", "CompiledRHS", "compile_rhs", "check_expression"]

#: Function names an expression may call (each with one argument).
ALLOWED_FUNCTIONS = ("sin", "cos", "tan", "exp", "log", "sqrt", "abs", "tanh")

_MAX_CHARS = 10_000
_NAME_RE = re.compile(r"^([xc])(0|[1-9][0-9]*)$")

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_BINOP_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}

_MATH_FUNCS: dict[str, Callable[[float], float]] = {
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "exp": math.exp,
    "log": math.log,
    "sqrt": math.sqrt,
    "abs": abs,
    "tanh": math.tanh,
}

# Evaluator signature: ev(X, C, F) where X / C are sequences of state / parameter values
# (Python floats or arrays) and F maps function names to callables.
_Eval = Callable[[Sequence[Any], Sequence[Any], dict[str, Callable[[Any], Any]]], Any]


def _segment(text: str, node: ast.AST) -> str:
    seg = ast.get_source_segment(text, node)
    return seg if seg is not None else type(node).__name__


def _short(seg: str, limit: int = 80) -> str:
    return seg if len(seg) <= limit else seg[: limit - 3] + "..."


def _bad_constant(text: str, node: ast.AST, why: str) -> DataError:
    return DataError(
        f"expression {text!r}: constant {_short(_segment(text, node))!r} {why}; write a finite real number instead"
    )


def _fold(text: str, node: ast.AST, fn: Callable[..., Any], *args: float) -> float:
    """Value of a numbers-only sub-expression, in floats; DataError if it is not a finite real number."""
    try:
        v = fn(*args)
    except ZeroDivisionError:
        raise _bad_constant(text, node, "divides by zero") from None
    except OverflowError:
        raise _bad_constant(text, node, "overflows (too large for a float)") from None
    except (ValueError, TypeError):
        raise _bad_constant(text, node, "is outside the domain of its function") from None
    if isinstance(v, complex):
        raise _bad_constant(text, node, "is not a real number (a negative base with a fractional power)")
    if not math.isfinite(v):
        raise _bad_constant(text, node, "overflows (too large for a float)")
    return float(v)


def _reject(text: str, node: ast.AST, what: str) -> DataError:
    return DataError(
        f"expression {text!r}: {what} {_segment(text, node)!r} is not allowed "
        f"(allowed: numbers, x0..x(D-1), c0..c(P-1), + - * / **, unary -, "
        f"{', '.join(ALLOWED_FUNCTIONS)})"
    )


_NODE_WORDS = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscript",
    ast.Lambda: "lambda",
    ast.Compare: "comparison",
    ast.IfExp: "conditional expression",
    ast.BoolOp: "boolean operator",
    ast.Tuple: "tuple",
    ast.List: "list",
    ast.Dict: "dict",
    ast.Set: "set",
    ast.ListComp: "comprehension",
    ast.SetComp: "comprehension",
    ast.DictComp: "comprehension",
    ast.GeneratorExp: "generator expression",
    ast.Starred: "starred expression",
    ast.JoinedStr: "f-string",
    ast.NamedExpr: "assignment expression",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}


class _Checker:
    """Walks a parsed expression and builds its evaluator (raises DataError on anything else)."""

    def __init__(self, text: str, n_states: int, n_params: int):
        self.text = text
        self.n_states = n_states
        self.n_params = n_params

    def build(self, node: ast.AST, *, exponent: bool = False) -> tuple[_Eval, _Eval, float | None]:
        """Return (array evaluator, scalar evaluator, value) for ``node``.

        ``value`` is the float value of a numbers-only sub-expression (checked to be a finite real
        number) and ``None`` for one that involves a state or parameter.
        """
        text = self.text
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                kind = "string literal" if isinstance(v, (str, bytes)) else f"constant of type {type(v).__name__}"
                raise _reject(text, node, kind)
            try:
                fv = float(v)
            except OverflowError:
                raise _bad_constant(text, node, "is too large for a float") from None
            if not math.isfinite(fv):
                raise _reject(text, node, "non-finite number")
            # A literal integer exponent stays an int (integer power in numpy/jax).
            av: Any = int(v) if (exponent and isinstance(v, int) and abs(v) <= 64) else fv
            return (lambda X, C, F: av), (lambda X, C, F: fv), fv
        if isinstance(node, ast.Name):
            m = _NAME_RE.match(node.id)
            if m is None:
                raise _reject(text, node, "name")
            kind, idx = m.group(1), int(m.group(2))
            if kind == "x":
                if idx >= self.n_states:
                    raise DataError(
                        f"expression {text!r}: state {node.id!r} is not declared "
                        f"(this family has {self.n_states} state(s): x0..x{self.n_states - 1})"
                    )
                f = lambda X, C, F: X[idx]  # noqa: E731
            else:
                if idx >= self.n_params:
                    declared = f"c0..c{self.n_params - 1}" if self.n_params else "none"
                    raise DataError(
                        f"expression {text!r}: parameter {node.id!r} is not declared "
                        f"(this family declares {self.n_params} parameter(s): {declared})"
                    )
                f = lambda X, C, F: C[idx]  # noqa: E731
            return f, f, None
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, (ast.USub, ast.UAdd)):
                a, s, val = self.build(node.operand, exponent=exponent)
                if isinstance(node.op, ast.USub):
                    return (lambda X, C, F: -a(X, C, F)), (lambda X, C, F: -s(X, C, F)), (None if val is None else -val)
                return (lambda X, C, F: +a(X, C, F)), s, val
            raise _reject(text, node, "unary operator")
        if isinstance(node, ast.BinOp):
            op = _BINOPS.get(type(node.op))
            if op is None:
                raise _reject(text, node, f"operator '{_op_symbol(node.op)}' in")
            la, ls, lv = self.build(node.left)
            ra, rs, rv = self.build(node.right, exponent=isinstance(node.op, ast.Pow))
            # numbers only: evaluate once now (floats, so `9**9**9` overflows instead of hanging)
            val = _fold(text, node, op, lv, rv) if (lv is not None and rv is not None) else None
            return ((lambda X, C, F: op(la(X, C, F), ra(X, C, F))), (lambda X, C, F: op(ls(X, C, F), rs(X, C, F))), val)
        if isinstance(node, ast.Call):
            fn = node.func
            if not isinstance(fn, ast.Name):
                raise _reject(text, fn, "callee")
            if fn.id not in ALLOWED_FUNCTIONS:
                raise _reject(text, fn, "function")
            if node.keywords:
                raise _reject(text, node.keywords[0], "keyword argument")
            if len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
                raise DataError(
                    f"expression {text!r}: function {fn.id!r} takes exactly one argument, got {_segment(text, node)!r}"
                )
            a, s, av_ = self.build(node.args[0])
            name = fn.id
            val = _fold(text, node, _MATH_FUNCS[name], av_) if av_ is not None else None
            return (lambda X, C, F: F[name](a(X, C, F))), (lambda X, C, F: F[name](s(X, C, F))), val
        word = _NODE_WORDS.get(type(node), f"syntax element ({type(node).__name__})")
        raise _reject(text, node, word)


def _op_symbol(op: ast.AST) -> str:
    symbols: dict[type[ast.AST], str] = {
        ast.FloorDiv: "//",
        ast.Mod: "%",
        ast.MatMult: "@",
        ast.BitAnd: "&",
        ast.BitOr: "|",
        ast.BitXor: "^",
        ast.LShift: "<<",
        ast.RShift: ">>",
    }
    return symbols.get(type(op), type(op).__name__)


def _parse(text: Any, n_states: int, n_params: int) -> tuple[_Eval, _Eval, _Checker]:
    if not isinstance(text, str):
        raise DataError(f"expression {text!r}: expected a string, found {type(text).__name__}")
    if not text.strip():
        raise DataError(f"expression {text!r}: empty expression")
    if len(text) > _MAX_CHARS:
        raise DataError(f"expression {text[:40]!r}...: longer than {_MAX_CHARS} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise DataError(f"expression {text!r}: syntax error ({err.msg})") from None
    except (ValueError, RecursionError, MemoryError) as err:
        raise DataError(f"expression {text!r}: cannot be parsed ({type(err).__name__})") from None
    chk = _Checker(text.strip(), n_states, n_params)
    try:
        arr, sca, _ = chk.build(tree.body)
    except RecursionError:
        raise DataError(f"expression {text!r}: too deeply nested") from None
    return arr, sca, chk


def check_expression(text: str, n_states: int, n_params: int) -> None:
    """Validate one expression; raise :class:`DataError` naming the offending token if invalid."""
    _parse(text, n_states, n_params)


class CompiledRHS:
    """A vector field ``f(x, c) -> dx/dt`` compiled from a list of checked expressions.

    Call it as ``f(x, c, xp=np)`` with ``x`` of shape ``[..., D]`` and ``c`` of shape ``[..., P]``
    (or plain sequences); the result has shape ``[..., D]``. Pass ``xp=jax.numpy`` inside JAX
    code (it is traceable, jittable and differentiable). :meth:`scipy_fun` gives the fast
    ``fun(t, y)`` used with :func:`scipy.integrate.solve_ivp`.
    """

    def __init__(self, exprs: Sequence[str], n_states: int, n_params: int, evaluators: list[tuple[_Eval, _Eval]]):
        self.exprs = tuple(exprs)
        self.n_states = int(n_states)
        self.n_params = int(n_params)
        self._arr = [a for a, _ in evaluators]
        self._sca = [s for _, s in evaluators]

    def __repr__(self) -> str:
        return f"CompiledRHS({list(self.exprs)!r}, n_states={self.n_states}, n_params={self.n_params})"

    def __call__(self, x: Any, c: Any = (), xp: Any = np) -> Any:
        x = xp.asarray(x)
        if x.shape[-1:] != (self.n_states,):
            raise ValueError(f"state must have last axis of size {self.n_states}, got shape {x.shape}")
        X = [x[..., i] for i in range(self.n_states)]
        if self.n_params:
            c = xp.asarray(c)
            if c.shape[-1:] != (self.n_params,):
                raise ValueError(f"parameters must have last axis of size {self.n_params}, got shape {c.shape}")
            C = [c[..., j] for j in range(self.n_params)]
        else:
            C = []
        F = {name: getattr(xp, name) for name in ALLOWED_FUNCTIONS}
        outs = [f(X, C, F) for f in self._arr]
        zero = xp.zeros_like(X[0])
        outs = xp.broadcast_arrays(zero, *outs)[1:]
        return xp.stack(list(outs), axis=-1)

    def scipy_fun(self, c: Sequence[float] | np.ndarray = ()) -> Callable[[float, np.ndarray], np.ndarray]:
        """``fun(t, y)`` for ``solve_ivp`` with the parameters ``c`` bound.

        Evaluates on Python floats with :mod:`math` (fast); where that raises (division by zero,
        log of a negative number, overflow, complex results) it falls back to NumPy semantics
        (``inf``/``nan``), which makes the solver fail visibly instead of the generator crashing.
        """
        C = [float(v) for v in np.asarray(c, dtype=np.float64).reshape(-1)]
        if len(C) != self.n_params:
            raise ValueError(f"expected {self.n_params} parameters, got {len(C)}")
        fs = self._sca
        M = _MATH_FUNCS
        c_arr = np.asarray(C, dtype=np.float64)
        call = self.__call__

        def fun(t: float, y: np.ndarray) -> np.ndarray:
            X = y.tolist()
            try:
                return np.array([float(f(X, C, M)) for f in fs])
            except (ArithmeticError, ValueError, TypeError):
                with np.errstate(all="ignore"):
                    return np.asarray(call(np.asarray(y, dtype=np.float64), c_arr, xp=np), dtype=np.float64)

        return fun


@typing.no_type_check  # checks its input (a family file's values) itself, naming the expression
def compile_rhs(exprs: Sequence[str], n_states: int | None = None, n_params: int = 0) -> CompiledRHS:
    """Check and compile the right-hand side ``dx_i/dt = exprs[i]``.

    Args:
        exprs: one expression per state, in ``x0..x{D-1}`` and ``c0..c{P-1}``.
        n_states: number of states ``D`` (default ``len(exprs)``; must equal it).
        n_params: number of declared parameters ``P``.

    Returns:
        A :class:`CompiledRHS` ``f`` with ``f(x, c, xp=np) -> array[..., D]``.

    Raises:
        DataError: for any expression outside the whitelist (naming the token and expression).
    """
    if isinstance(exprs, str) or not isinstance(exprs, Sequence):
        raise DataError(f"rhs: expected a list of expression strings, found {type(exprs).__name__}")
    if n_states is None:
        n_states = len(exprs)
    if len(exprs) == 0 or len(exprs) != n_states:
        raise DataError(f"rhs: expected {n_states} expressions (one per state), found {len(exprs)}")
    if n_params < 0:
        raise DataError(f"rhs: number of parameters must be >= 0, got {n_params}")
    evaluators = []
    for e in exprs:
        a, s, _ = _parse(e, n_states, n_params)
        evaluators.append((a, s))
    return CompiledRHS(exprs, n_states, n_params, evaluators)
