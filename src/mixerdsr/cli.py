"""The ``mixerdsr`` command line: a thin layer over the Python API.

Commands are grouped; each group is added by one ``_add_<group>_commands(sub)`` function listed in
``COMMAND_GROUPS`` and every command sets ``func`` (``args -> exit code``) with
``set_defaults``. :func:`main` parses and dispatches via ``args.func(args)``.

Bad input (unknown dataset, missing file, invalid TOML or data) prints one line
``error: ...`` on stderr and returns exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__
from .checkpoint import CheckpointError
from .data._envdata import NPZ_READ_ERRORS, DataError

__all__ = ["build_parser", "main", "COMMAND_GROUPS", "EXIT_USAGE"]

#: exit code for bad input (same as argparse's usage errors)
EXIT_USAGE = 2


class CLIError(Exception):
    """A user-facing error: printed as ``error: <message>``, exit code 2."""


def _nonneg_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {s!r}")
    return v


def _pos_int(s: str) -> int:
    v = _nonneg_int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _check_out_dir(path: Any, flag: str) -> None:
    """Refuse, before any work, an output folder that is an existing file."""
    if path is not None and os.path.exists(path) and not os.path.isdir(path):
        raise CLIError(f"{flag} {path} is a file, not a folder; name a folder (it is created if missing)")


def _num(v: Any, spec: str = ".4g") -> str:
    """A metric for the console: ``n/a`` for a missing or non-finite value."""
    return format(v, spec) if isinstance(v, (int, float)) and v == v and abs(v) != float("inf") else "n/a"


def _print_help(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    return run


# ----------------------------------------------------------------------------------------------
# data commands
# ----------------------------------------------------------------------------------------------


def _cmd_data_list(args: argparse.Namespace) -> int:
    from .data import list_datasets

    _print_names(list_datasets())
    return 0


def _print_names(items: list[tuple[str, str]]) -> None:
    """``name  description`` lines, names padded to one width."""
    width = max((len(n) for n, _ in items), default=0)
    for name, desc in items:
        print(f"{name:<{width}}  {desc}")


def _cmd_data_generate(args: argparse.Namespace) -> int:
    from .data import generate_dataset, save_dataset

    if (args.name is None) == (args.families is None):
        raise CLIError("give exactly one of NAME or --families FILE.toml")
    source = args.name if args.name is not None else args.families
    splits, meta = generate_dataset(source, args.seed, progress=not args.quiet)
    path = save_dataset(args.out, splits, meta)
    if not args.quiet:
        shapes = ", ".join(f"{k} {tuple(v.x.shape)}" for k, v in splits.items())
        print(f"wrote {path}: {shapes}")
    return 0


def _fmt_params(p: Sequence[float] | None) -> str:
    if p is None:
        return "-"
    return "(" + ", ".join(f"{v:.6g}" for v in p) + ")"


def _cmd_data_show(args: argparse.Namespace) -> int:
    import numpy as np

    from .data import SPLITS, list_datasets, load_dataset, read_meta, resolve_dataset

    if not os.path.exists(args.file) and args.file in dict(list_datasets()):  # a built-in name
        splits, meta = resolve_dataset(args.file)
    else:
        splits = load_dataset(args.file)
        meta = read_meta(args.file)
    title = meta.get("name", "")
    print(f"{args.file}" + (f"  [{title}]" if title else "") + (f"  seed={meta['seed']}" if "seed" in meta else ""))
    order = [s for s in SPLITS if s in splits] + [s for s in splits if s not in SPLITS]
    for sp in order:
        d = splits[sp]
        print(
            f"\n{sp}: x {tuple(d.x.shape)} [envs, trajectories, times, dims], t {tuple(d.t.shape)}, "
            f"dtype {d.x.dtype}, t in [{float(d.t.min()):.4g}, {float(d.t.max()):.4g}]"
        )
        fams, counts = np.unique(d.family, return_counts=True)
        parts = []
        for f, c in zip(fams.tolist(), counts.tolist()):
            nm = d.family_names[f] if (d.family_names is not None and 0 <= f < len(d.family_names)) else None
            parts.append(f"{f}" + (f" ({nm})" if nm else "") + f": {c} envs")
        print("  families: " + "; ".join(parts))
        limit = d.n_envs if args.max_envs < 0 else min(args.max_envs, d.n_envs)
        for e in range(limit):
            name = d.env_names[e] if d.env_names is not None else f"env {e}"
            p = d.params[e] if d.params is not None else None
            print(f"  env {e:>4}  family {int(d.family[e]):>3}  {name:<24} params {_fmt_params(p)}")
        if limit < d.n_envs:
            print(f"  ... {d.n_envs - limit} more envs (use --max-envs -1 to list all)")
    if not args.no_plot:
        from .plots import plot_dataset_overview

        target = args.plot or os.path.splitext(args.file)[0] + ".png"
        out = plot_dataset_overview(splits, target, split=args.split, max_traj=args.max_traj)
        print(f"\nwrote {out}")
    return 0


def _add_data_commands(sub: Any) -> None:
    """The ``data`` group: ``list``, ``generate``, ``show``."""
    data = sub.add_parser(
        "data",
        help="list, generate and inspect datasets",
        description="List, generate and inspect multi-environment datasets.",
    )
    data.set_defaults(func=_print_help(data))
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    p = dsub.add_parser("list", help="list the built-in datasets")
    p.set_defaults(func=_cmd_data_list)

    p = dsub.add_parser(
        "generate",
        help="generate a dataset into one .npz file",
        description="Generate a built-in benchmark (NAME) or the families of a TOML file.",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="built-in dataset name (see `mixerdsr data list`)")
    p.add_argument("--families", metavar="FILE.toml", help="a TOML family file instead of a name")
    p.add_argument("--seed", type=_nonneg_int, default=None, help="generator seed (default: the dataset's own)")
    p.add_argument("--out", required=True, metavar="F.npz", help="output .npz file")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_cmd_data_generate)

    p = dsub.add_parser(
        "show",
        help="summarise a dataset .npz and plot it",
        description="Per split: shapes, families, environment parameters; writes an overview PNG.",
    )
    p.add_argument("file", metavar="F.npz", help="dataset file")
    p.add_argument(
        "--plot",
        metavar="P.png",
        default=None,
        help="where to write the overview figure (default: the dataset's name with .png)",
    )
    p.add_argument("--no-plot", action="store_true", help="print the summary only, write no figure")
    p.add_argument("--split", default=None, help="split to plot (default: train)")
    p.add_argument("--max-traj", type=int, default=4, help="trajectories per family in the plot")
    p.add_argument("--max-envs", type=int, default=20, help="environments listed per split (-1: all)")
    p.set_defaults(func=_cmd_data_show)


# ----------------------------------------------------------------------------------------------
# run (the main job)
# ----------------------------------------------------------------------------------------------

_RUN_FLAGS = {  # flag -> (setting, type, help)
    "--data": (
        "data.source",
        str,
        "built-in dataset name (`mixerdsr data list`), a dataset .npz file, an Epilepsy2-style .ts file or an "
        "SCCTS-style .data file",
    ),
    "--backbone": ("model.backbone", str, "expert backbone: geps, coda, ncf, shplrnn or cavia (one expert)"),
    "--experts": (
        "model.num_experts",
        "experts",
        "number of experts M, or auto (chosen after the warm-up: the groups the shared expert's contexts "
        "form, unless it already fits them all; up to the configuration's M; gate.choose = silhouette) "
        "or auto:N (up to N)",
    ),
    "--gate": ("gate.mode", str, "gate update: lstsq (MixER), gradient (naive MoE) or frozen"),
    "--outer-steps": ("train.outer_steps", int, "number of outer steps of proximal alternating minimisation"),
    "--context-size": ("model.context_size", int, "full context length d_ctx"),
    "--time-budget": (
        "train.time_budget",
        "duration",
        "training time, all sittings together (e.g. 90s, 20m, 1.5h; plain number: seconds): the run stops at the "
        "best model reached by then",
    ),
    "--seed": ("train.seed", int, "training seed"),
    "--test-file": ("data.test_file", str, "Epilepsy2: the archive's full test .ts file, used as the held-out set"),
}


def _dest(flag: str) -> str:
    return "setting_" + flag.lstrip("-").replace("-", "_")


def _experts_arg(value: str) -> int | str:
    """``--experts``: a positive number, ``auto`` or ``auto:N``."""
    v = value.strip().lower()
    if v == "auto" or (v.startswith("auto:") and v[5:].isdigit() and int(v[5:]) >= 1):
        return v
    if v.isdigit() and int(v) >= 1:
        return int(v)
    raise argparse.ArgumentTypeError(f"expected a number of experts >= 1, 'auto' or 'auto:N', got {value!r}")


def _duration_arg(value: str) -> float:
    """``--time-budget``: seconds from ``90``, ``90s``, ``20m`` or ``1.5h``."""
    v = value.strip().lower()
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(v[-1:], None)
    try:
        seconds = float(v[:-1] if scale else v) * (scale or 1.0)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 20m or 1.5h, got {value!r}")
    return seconds


def _parse_sets(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as overrides; VALUE is a TOML value (``12``, ``0.5``, ``true``,
    ``"text"``), a bare word is a string."""
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CLIError(f"--set {item!r}: expected KEY=VALUE, e.g. --set gate.every=12")
        try:
            out[key] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = value.strip()
    return out


def _run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings ``mixerdsr run``'s flags give (None = not given), by dotted name."""
    overrides = {key: getattr(args, _dest(flag)) for flag, (key, _, _) in _RUN_FLAGS.items()}
    experts = overrides["model.num_experts"]
    auto = isinstance(experts, str)  # auto / auto:N
    if auto:
        overrides["model.num_experts"] = int(experts[5:]) if experts.startswith("auto:") else None
    overrides["train.low_memory_compile"] = True if args.low_memory else None
    overrides.update(_parse_sets(args.settings))
    if auto:
        overrides.setdefault("gate.choose", "silhouette")
        if overrides.get("gate.warmup") is None:  # the configuration's warm-up, or one of its own
            overrides["gate.warmup"] = _auto_warmup(args, overrides)
    if (experts is not None or auto) and overrides.get("model.context_size") is None:
        overrides["model.context_size"] = _context_for_experts(args, overrides)
    return overrides


def _base_config(args: argparse.Namespace, overrides: dict[str, Any]) -> Any:
    """The configuration of the preset / file with ``overrides`` (None when it is invalid: the
    full load reports the error)."""
    from ._config import load_config

    try:
        return load_config(args.preset or (None if args.config else "odebench-2"), args.config, overrides)
    except ValueError:
        return None


def _context_for_experts(args: argparse.Namespace, overrides: dict[str, Any]) -> int | None:
    """``--experts M`` without ``--context-size``: with split contexts every expert keeps the
    slice it has in the configuration (``context_size / num_experts`` there), so the context
    is that slice times M and any M works; without splitting the configuration's size."""
    skip = ("model.num_experts", "model.context_size")
    base = _base_config(args, {k: v for k, v in overrides.items() if k not in skip and not k.startswith("gate.")})
    if base is None or not base.model.split_context:
        return None
    per_expert = max(1, base.model.context_size // base.model.num_experts)
    m = overrides.get("model.num_experts") or base.model.num_experts
    return per_expert * m


def _auto_warmup(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    """``--experts auto``: the warm-up after which the number of experts is chosen
    (:func:`mixerdsr.routing.auto_warmup` of the configuration)."""
    from .routing import auto_warmup

    cfg = _base_config(args, {k: v for k, v in overrides.items() if k not in ("gate.choose", "model.num_experts")})
    if cfg is None:
        return 100  # the full load reports the configuration's error
    return auto_warmup(cfg.gate.warmup, cfg.train.outer_steps)


def _cmd_run(args: argparse.Namespace) -> int:
    from ._config import load_config
    from ._run import run

    overrides = _run_overrides(args)
    try:
        preset = args.preset or (None if args.config else "odebench-2")
        cfg = load_config(preset, args.config, overrides)
    except ValueError as err:
        raise CLIError(str(err)) from None
    src, mod = os.path.basename(cfg.data.source).removesuffix(".npz"), cfg.model
    m_name = f"auto{mod.num_experts}" if cfg.gate.choose != "fixed" else str(mod.num_experts)
    out = args.out or os.path.join("runs", f"{src}-{mod.backbone}-m{m_name}-{cfg.gate.mode}-s{cfg.train.seed}")
    _check_out_dir(out, "--out")
    print(
        f"mixerdsr run: data={cfg.data.source} backbone={mod.backbone} experts={m_name} "
        f"gate={cfg.gate.mode} outer_steps={cfg.train.outer_steps} -> {out}"
    )
    try:
        m = run(cfg, out, resume=args.resume, progress=not args.quiet).metrics
    except KeyboardInterrupt:
        print(f"interrupted; continue with: mixerdsr run ... --out {out} --resume", file=sys.stderr)
        return 130
    except ValueError as err:
        raise CLIError(str(err)) from None
    for split in ("test", "adapt_test"):
        if split in m:
            ms = m[split]
            print(
                f"{split:>10}: relMSE {_num(ms['rel_mse'])}  MSE {_num(ms['mse'])}  "
                f"traj_rel_l2 {_num(ms.get('traj_rel_l2'))}  TPRMSE {_num(ms['tprmse'], '.1f')}%"
                + (f"  ({ms['n_diverged']} diverged env(s) left out)" if ms.get("n_diverged") else "")
            )
    tr = m.get("training") or {}
    if tr:
        state = "converged" if tr["converged"] else "still improving"
        why = {"outer_steps": "all outer steps ran", "converged": "stopped on a plateau", "time_budget": "time budget"}
        print(f"  training: {tr['outer_steps_run']} outer steps ({why[tr['stop_reason']]}), {state}")
    r = m["routing"]
    print(f"   routing: counts {r['counts']}  purity {_num(r['purity'], '.3g')}  ARI {_num(r['ari'], '.3g')}")
    if "chosen_experts" in r:
        print(f"   experts: {r['chosen_experts']} chosen by {r.get('chosen_by')} (up to {len(r['counts'])})")
    if m.get("warnings"):
        print(f"  warnings: {len(m['warnings'])} (listed above and in report.md)")
    ds = m.get("downstream") or {}
    keys = [
        k
        for k in (
            "context_kmeans_ari",
            "context_kmeans_accuracy",
            "raw_kmeans_ari",
            "raw_kmeans_accuracy",
            "logreg_accuracy",
            "logreg_train_accuracy",
        )
        if k in ds
    ]
    if keys:
        print(
            "downstream: " + "  ".join(f"{k} {ds[k]:.3f}" if isinstance(ds[k], float) else f"{k} {ds[k]}" for k in keys)
        )
    print(f"    report: {os.path.join(out, 'report.md')}")
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    from ._config import list_presets, preset_description

    for name in list_presets():
        print(f"{name:<14} {preset_description(name)}")
    return 0


def _add_run_commands(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="train + adapt + evaluate + plots (the main job)",
        description="Train a MixER layer, adapt to new environments, evaluate, and write "
        "config, checkpoint, history.jsonl, metrics.json, plots and report.md to --out.",
    )
    p.add_argument(
        "--preset",
        default=None,
        help="built-in configuration (see `mixerdsr presets`; default odebench-2 unless --config is given)",
    )
    p.add_argument("--config", metavar="FILE.toml", default=None, help="configuration file (overrides the preset)")
    for flag, (key, typ, hlp) in _RUN_FLAGS.items():
        name = flag.lstrip("-").upper().replace("-", "_")
        conv: Any = {"experts": _experts_arg, "duration": _duration_arg}.get(typ, typ)  # type: ignore[call-overload]
        p.add_argument(flag, dest=_dest(flag), metavar=name, type=conv, default=None, help=f"{hlp} ({key})")
    p.add_argument(
        "--set",
        dest="settings",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="any setting by its dotted name, e.g. --set gate.every=12 --set train.lr_weights=3e-4 (repeatable; "
        "VALUE is read as a TOML value, else as a string)",
    )
    p.add_argument("--out", metavar="DIR", default=None, help="output directory (default: runs/<data>-<backbone>-...)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--low-memory",
        action="store_true",
        help="compile the training step without XLA's CPU fusion emitters: a lower memory peak while "
        "compiling, slower gradient steps (figures in docs/performance.md)",
    )
    p.set_defaults(func=_cmd_run)
    q = sub.add_parser("presets", help="list the built-in run configurations")
    q.set_defaults(func=_cmd_presets)


# ----------------------------------------------------------------------------------------------
# contexts (export learned contexts and routes of a run)
# ----------------------------------------------------------------------------------------------


def _cmd_contexts(args: argparse.Namespace) -> int:
    import numpy as np

    run_dir = args.run_dir
    src = os.path.join(run_dir, "contexts.npz")
    if not os.path.isfile(src):
        raise CLIError(f"{src}: no such file (is {run_dir} a finished `mixerdsr run` output directory?)")
    try:
        with np.load(src, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except NPZ_READ_ERRORS as err:
        raise CLIError(
            f"{src}: not a readable contexts file ({type(err).__name__}: {err}); run the job again to rewrite it"
        ) from None
    rows = []  # (split, env, family, route, context)
    for split, key in (("train", "train"), ("adapt", "adapt")):
        if key not in arrays:
            continue
        ctx = np.atleast_2d(arrays[key])
        n = ctx.shape[0]
        fam = arrays.get(f"{key}_family", np.full(n, -1))
        route = arrays.get(f"{key}_routes", np.full(n, -1))
        rows += [(split, e, int(fam[e]), int(route[e]), ctx[e]) for e in range(n)]
    out = args.out
    if out is not None and os.path.exists(out):
        raise CLIError(f"--out {out} exists; name a new file (nothing was overwritten)")
    if out is not None and out.endswith(".npz"):
        np.savez(out, **arrays)
        print(f"wrote {out}: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items()))
        return 0
    if out is not None and not out.endswith(".csv"):
        raise CLIError(f"--out {out}: expected a file name ending in .npz or .csv")
    d = max((len(r[4]) for r in rows), default=0)
    lines = [",".join(["split", "env", "family", "route"] + [f"ctx_{i}" for i in range(d)])]
    lines += [",".join([s, str(e), str(f), str(r)] + [repr(float(v)) for v in c]) for s, e, f, r, c in rows]
    text = "\n".join(lines) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        with open(out, "w") as fh:
            fh.write(text)
        print(f"wrote {out}: {len(rows)} rows x {d} context dims")
    return 0


def _add_contexts_commands(sub: Any) -> None:
    p = sub.add_parser(
        "contexts",
        help="export the learned contexts and routes of a run (.npz or CSV)",
        description="Export the training and adapted contexts of a `mixerdsr run` output directory, "
        "with each environment's route (expert) and family label (-1 = unknown). "
        "CSV columns: split, env, family, route, ctx_0 .. ctx_{d-1}; .npz keys: train, "
        "train_routes, train_family, adapt, adapt_routes, adapt_family.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="output directory of `mixerdsr run`")
    p.add_argument("--out", metavar="F.npz|F.csv", default=None, help="output file (default: CSV on stdout)")
    p.set_defaults(func=_cmd_contexts)


# ----------------------------------------------------------------------------------------------
# trained models: adapt one to new data; the shipped ones
# ----------------------------------------------------------------------------------------------


def _cmd_adapt(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    t0 = time.perf_counter()
    _compilation_cache()
    from ._adapt_job import adapt_job
    from .data import load_dataset
    from .models import resolve_model

    out = Path(args.out) if args.out else Path("runs") / f"adapt-{Path(args.data).stem}"
    _check_out_dir(out, "--out")
    model_dir = Path(args.model) if Path(args.model).is_dir() else Path(args.model).parent
    if Path(args.model).exists() and out.resolve() == model_dir.resolve():
        raise CLIError(
            f"--out {out} is the model's own run directory; its metrics.json and contexts.npz would be overwritten "
            "(name another folder)"
        )
    tm = resolve_model(args.model)
    splits = load_dataset(args.data)
    log = (lambda s: None) if args.quiet else print
    try:
        m = adapt_job(
            tm,
            splits,
            out,
            source=str(args.data),
            steps=args.steps,
            time_stride=args.time_stride,
            log=log,
            progress=not args.quiet,
        )
    except ValueError as err:
        raise CLIError(str(err)) from None
    print(f"{'env':>4} {'family':>6} {'expert':>6} {'2nd':>4} {'conf':>5} {'fit rel':>8} {'forecast':>8}  resembles")
    for r in m["environments"]:
        fam = str(r["family"]) if r["family"] >= 0 else "-"
        fc = _num(r.get("forecast_rel_mse"), ".3g")
        guess = r["family_by_route_name"]
        if r["family_by_context"] != r["family_by_route"]:
            guess += f" (context nearest: {r['family_by_context_name']})"
        flag = "" if r["trusted"] else "  [low confidence]"
        print(
            f"{r['env']:>4} {fam:>6} {r['expert']:>6} {r['runner_up']:>4} {r['confidence']:>5.2f} "
            f"{r['fit_rel_loss']:>8.3g} {fc:>8}  {guess}{flag}"
        )
    if "forecast" in m:
        f = m["forecast"]
        print(
            f"forecast of {f['split']}: relMSE {_num(f['rel_mse'])}  MSE {_num(f['mse'])}  "
            f"TPRMSE {_num(f['tprmse'], '.1f')}%"
        )
    for w in m["warnings"]:
        print(f"warning: {w}")
    print(f"wrote {out / 'metrics.json'} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _compilation_cache() -> None:
    """JAX's persistent compilation cache and the exported fitting functions (:mod:`._aot`) in
    the user's cache directory, so that a second ``mixerdsr adapt`` neither traces nor compiles
    them again (``MIXERDSR_CACHE_DIR`` overrides the place; an empty value switches it off)."""
    import jax

    where = os.environ.get("MIXERDSR_CACHE_DIR")
    if where == "":
        return
    if where is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        where = os.path.join(base, "mixerdsr", "jax")
    try:
        os.makedirs(where, exist_ok=True)
    except OSError:  # pragma: no cover - a read-only home: run without the cache
        return
    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    from . import _aot

    _aot.enable(os.path.join(where, "exported"))  # traced functions too (tracing an ODE fit takes seconds)


def _cmd_pretrained_list(args: argparse.Namespace) -> int:
    from .models import list_pretrained

    items = list_pretrained()
    if not items:
        print("no pretrained models in this installation")
    _print_names(items)
    return 0


def _add_model_commands(sub: Any) -> None:
    p = sub.add_parser(
        "adapt",
        help="fit a trained model to new environments (one trajectory is enough) and forecast",
        description="Fit a context to every environment of the data file's adapt_train split (or train "
        "when that is all there is) with the model's weights frozen; report each environment's expert, "
        "the training family it resembles (by route and by context) and a confidence; forecast "
        "adapt_test / test when present; write metrics.json, contexts.npz and plots to --out.",
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="NAME|RUN_DIR|MODEL.npz",
        help="a pretrained model (`mixerdsr pretrained list`), a finished run directory or its model.npz",
    )
    p.add_argument("--data", required=True, metavar="FILE.npz", help="dataset file (the `mixerdsr data` schema)")
    p.add_argument("--out", metavar="DIR", default=None, help="output directory (default: runs/adapt-<data name>)")
    p.add_argument("--steps", type=_pos_int, default=None, help="fitting steps (default: the model's adapt.steps)")
    p.add_argument(
        "--time-stride",
        type=_pos_int,
        default=None,
        help="keep every n-th time point (default: the model's training stride)",
    )
    p.add_argument("--quiet", action="store_true", help="only the summary table")
    p.set_defaults(func=_cmd_adapt)
    q = sub.add_parser("pretrained", help="the trained models shipped with mixerdsr")
    qs = q.add_subparsers(dest="pretrained_command", metavar="COMMAND")
    q.set_defaults(func=_print_help(q))
    ql = qs.add_parser("list", help="list the shipped models")
    ql.set_defaults(func=_cmd_pretrained_list)


# ----------------------------------------------------------------------------------------------
# reproduce the paper's tables
# ----------------------------------------------------------------------------------------------


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from . import reproduce as R

    _check_out_dir(args.results, "--results")
    _check_out_dir(args.runs, "--runs")
    try:
        if not args.report:
            R.run_table(
                args.table,
                args.budget,
                seeds=args.seeds,
                patterns=args.cells or (),
                results=args.results,
                runs=args.runs,
                force=args.force,
                progress=not args.quiet,
                time_budget=args.time_budget or 0.0,
            )
        out = R.results_dir(args.results, args.table, args.budget).with_suffix(".md")
        if not R.load_cells(args.table, args.budget, args.results):
            raise CLIError(
                f"no cell JSON in {R.results_dir(args.results, args.table, args.budget)}: nothing to report"
                + (f" ({out} left as it is)" if out.exists() else "")
            )
        text = R.report(args.table, args.budget, args.results)
    except ValueError as err:
        raise CLIError(str(err)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    if args.table == "fig2":
        png = R.figure2(args.budget, args.results)
        if png is not None:
            print(f"wrote {png}")
    print(f"wrote {out}")
    return 0


def _add_reproduce_commands(sub: Any) -> None:
    from .reproduce import BUDGETS, TABLES

    p = sub.add_parser(
        "reproduce",
        help="reproduce a table or figure of the MixER paper (resumable, one JSON per cell)",
        description="Run every cell (dataset, backbone, variant, seed) of a table of the paper whose "
        "JSON is not in --results yet, then write the Markdown table (ours beside the paper's values) "
        "from the JSONs. Tables: "
        + "; ".join(f"{k}: {t.title.split(':')[0]}" for k, t in TABLES.items())
        + ". An interrupted cell resumes from its checkpoint under --runs.",
    )
    p.add_argument("table", choices=list(TABLES), metavar="TABLE", help=f"one of {', '.join(TABLES)}")
    p.add_argument(
        "--budget",
        choices=BUDGETS,
        default="cpu",
        help="smoke: seconds per cell (tiny networks, 2 envs per family, fixed-step RK4); cpu (default): "
        "about 5 min per cell on 2 CPU cores (fewer outer steps, one gate update per inner loop); paper: the paper's "
        "settings (500 outer steps, gate after every inner step), for a GPU; converged: the paper's sizes trained "
        "until validation stops improving (learning-rate drops on plateaus, at most 5000 outer steps; JSONs in "
        "RESULTS/converged/TABLE/)",
    )
    p.add_argument("--seeds", nargs="+", type=_nonneg_int, default=[0, 1, 2], help="training seeds (default 0 1 2)")
    p.add_argument(
        "--cells", nargs="+", metavar="PATTERN", default=None, help="only cells whose name matches (e.g. 'lv-*-s0')"
    )
    p.add_argument("--force", action="store_true", help="run cells whose JSON exists again")
    p.add_argument("--report", action="store_true", help="only rebuild the table from the JSON files")
    p.add_argument(
        "--results",
        default="results",
        metavar="DIR",
        help="where the JSONs and tables go (DIR/TABLE/; default ./results; the project's own are in docs/results)",
    )
    p.add_argument("--runs", default="runs/reproduce", metavar="DIR", help="where the run directories go")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--time-budget",
        type=_duration_arg,
        default=None,
        help="training time per cell (e.g. 30m): a cell stops at the best model it reached by then",
    )
    p.set_defaults(func=_cmd_reproduce)


#: Functions adding one command group each to the top-level subparsers (append to extend).
COMMAND_GROUPS: list[Callable[[Any], None]] = [
    _add_data_commands,
    _add_run_commands,
    _add_contexts_commands,
    _add_model_commands,
    _add_reproduce_commands,
]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; its subparsers action is kept as ``parser.subparsers``."""
    parser = argparse.ArgumentParser(
        prog="mixerdsr", description="Hierarchical dynamical system reconstruction with MixER."
    )
    parser.add_argument("--version", action="version", version=f"mixerdsr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.subparsers = sub  # type: ignore[attr-defined]
    parser.set_defaults(func=_print_help(parser))
    for add in COMMAND_GROUPS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 success, 2 bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse usage errors (2) and --help/--version (0)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # e.g. `mixerdsr data show F.npz | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:  # pragma: no cover
            pass
        return 0
    except (CLIError, DataError, CheckpointError, OSError) as err:  # OSError includes FileNotFoundError
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE


def _one_line(err: BaseException) -> str:
    msg = str(err) or type(err).__name__
    if isinstance(err, FileNotFoundError) and err.filename and not str(err).startswith(str(err.filename)):
        msg = f"{err.filename}: no such file"
    return " ".join(msg.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
