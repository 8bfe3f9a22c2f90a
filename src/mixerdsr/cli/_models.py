"""``mixerdsr contexts``, ``mixerdsr adapt`` and ``mixerdsr pretrained``: trained models and new environments."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..data._envdata import NPZ_READ_ERRORS
from ._common import CLIError, _check_out_dir, _compilation_cache, _num, _pos_int, _print_help, _print_names


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
    from .._adapt_job import adapt_job
    from ..data import load_dataset
    from ..models import resolve_model

    out = Path(args.out) if args.out else Path("runs") / f"adapt-{Path(args.data).stem}"
    _check_out_dir(out, "--out")
    model_dir = Path(args.model) if Path(args.model).is_dir() else Path(args.model).parent
    if Path(args.model).exists() and out.resolve() == model_dir.resolve():
        raise CLIError(
            f"--out {out} is the model's own run directory; its metrics.json and contexts.npz would be overwritten "
            "(name another folder)"
        )
    tm = _with_adapt_settings(resolve_model(args.model), args.settings)
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


def _with_adapt_settings(tm: Any, items: list[str]) -> Any:
    """``tm`` with its ``[adapt]`` settings changed by ``--set adapt.KEY=VALUE`` items (the
    weights were trained with the rest, so only adaptation settings can change; ``init`` and
    ``joint`` belong to a run's own adaptation, this command always fits from every expert's
    start)."""
    import dataclasses

    from .._settings import SettingError
    from ._run import parse_sets

    changes = parse_sets(items)
    fields = {f.name for f in dataclasses.fields(tm.config.adapt)} - {"init", "joint"}
    for key in changes:
        section, _, name = key.partition(".")
        if section != "adapt" or name not in fields:
            names = ", ".join(f"adapt.{f}" for f in sorted(fields))
            raise CLIError(f"--set {key}: only adaptation settings can change here; choose one of {names}")
    if not changes:
        return tm
    try:
        adapt = dataclasses.replace(tm.config.adapt, **{k.partition(".")[2]: v for k, v in changes.items()})
    except SettingError as err:
        raise CLIError(f"--set: {err}") from None
    return dataclasses.replace(tm, config=dataclasses.replace(tm.config, adapt=adapt))


def _cmd_pretrained_list(args: argparse.Namespace) -> int:
    from ..models import list_pretrained

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
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="adapt.KEY=VALUE",
        help="an adaptation setting, e.g. --set adapt.lr=3e-3 --set adapt.context_penalty=1e-3 (repeatable)",
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
