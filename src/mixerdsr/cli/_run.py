"""``mixerdsr run`` (train, adapt, evaluate, plot) and ``mixerdsr presets``: the run flags and their settings."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ._common import CLIError, _check_out_dir, _duration_arg, _num

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
        "form, unless it already fits them all; up to the configuration's M; gate.router = warm_start with "
        "gate.warm_start.grouping = silhouette) "
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
    "--devices": (
        "train.devices",
        int,
        "devices to spread the environments over (default: every device JAX sees; results equal one device's)",
    ),
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


def parse_sets(items: list[str]) -> dict[str, Any]:
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
    overrides.update(parse_sets(args.settings))
    if auto:  # a warm start with the configuration's warm-up (0: automatic), the count chosen
        overrides.setdefault("gate.router", "warm_start")
        overrides.setdefault("gate.warm_start.grouping", "eigengap")
    if (experts is not None or auto) and overrides.get("model.context_size") is None:
        overrides["model.context_size"] = _context_for_experts(args, overrides)
    args.strided_grid = _sequence_on_strided_grid(args, overrides)
    if args.strided_grid:
        overrides["data.time_stride"] = 1
    return overrides


def _sequence_on_strided_grid(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    """``--backbone`` names a sequence expert (a one-step map) while the configuration trains
    on every n-th time point (``data.time_stride = n > 1``, a vector-field preset's choice) and
    the stride was not given: returns n (else 0). A one-step map learns the data's own grid
    (hier-shPLRNN on ODEBench-2: test relMSE 2.6-3.4 on every 5th point, 0.06-0.2 on every
    point; ``docs/training.md``)."""
    from ..experts import BACKBONES, AbstractSequenceExpert

    backbone = overrides.get("model.backbone")
    cls = BACKBONES.get(backbone) if backbone else None
    if cls is None or not issubclass(cls, AbstractSequenceExpert) or overrides.get("data.time_stride") is not None:
        return 0
    base = _base_config(args, {k: v for k, v in overrides.items() if k == "model.backbone"})
    return base.data.time_stride if base is not None and base.data.time_stride > 1 else 0


def _preset_of(args: argparse.Namespace) -> str | None:
    """The preset a ``mixerdsr run`` starts from: ``--preset``; else, without ``--config``, the
    built-in dataset ``--data`` names (its data facts), the default job's ``odebench-2`` when
    ``--data`` is not given, the series presets for the series formats (an Epilepsy2-style
    ``.ts`` file: ``epilepsy2``; an SCCTS-style ``.data`` file: ``sccts``), and none for a
    user's ``.npz``: it gets the global defaults, not a benchmark's tuning or time stride."""
    from .._config import list_presets

    if args.preset or args.config:
        return args.preset
    data = getattr(args, _dest("--data"))
    if data is None:
        return "odebench-2"
    series = {".ts": "epilepsy2", ".data": "sccts"}.get(os.path.splitext(data)[1].lower())
    return data if data in list_presets() else series


def _base_config(args: argparse.Namespace, overrides: dict[str, Any]) -> Any:
    """The configuration of the preset / file with ``overrides`` (None when it is invalid: the
    full load reports the error)."""
    from .._config import load_config

    try:
        return load_config(_preset_of(args), args.config, overrides)
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


def _join(args: argparse.Namespace) -> None:
    """``--coordinator``: join the other hosts' processes before JAX starts."""
    from ..sharding import join_processes

    explicit = args.coordinator != "auto"
    if explicit and (args.num_processes is None or args.process_id is None):
        raise CLIError("--coordinator HOST:PORT needs --num-processes and --process-id (or use --coordinator auto)")
    if explicit and not 0 <= args.process_id < args.num_processes:
        raise CLIError(f"--process-id {args.process_id}: expected 0 to {args.num_processes - 1}")
    join_processes(args.coordinator, args.num_processes, args.process_id)


def _cmd_run(args: argparse.Namespace) -> int:
    from .._config import load_config
    from .._run import run

    if args.coordinator:
        _join(args)
    overrides = _run_overrides(args)
    try:
        cfg = load_config(_preset_of(args), args.config, overrides)
    except ValueError as err:
        raise CLIError(str(err)) from None
    src, mod = os.path.basename(cfg.data.source).removesuffix(".npz"), cfg.model
    chosen = cfg.gate.router == "warm_start" and cfg.gate.warm_start.grouping != "fixed"
    m_name = f"auto{mod.num_experts}" if chosen else str(mod.num_experts)
    out = args.out or os.path.join("runs", f"{src}-{mod.backbone}-m{m_name}-{cfg.gate.mode}-s{cfg.train.seed}")
    _check_out_dir(out, "--out")
    print(
        f"mixerdsr run: data={cfg.data.source} backbone={mod.backbone} experts={m_name} "
        f"gate={cfg.gate.mode} outer_steps={cfg.train.outer_steps} -> {out}"
    )
    if stride := getattr(args, "strided_grid", 0):
        print(
            f"note: {mod.backbone} is a one-step map, trained on every time point (data.time_stride = 1; "
            f"the configuration's {stride} is for vector fields; --set data.time_stride={stride} keeps it)"
        )
    try:
        m = run(cfg, out, resume=args.resume, progress=not args.quiet).metrics
    except KeyboardInterrupt:
        print(f"interrupted; continue with: mixerdsr run ... --out {out} --resume", file=sys.stderr)
        return 130
    except ValueError as err:
        raise CLIError(str(err)) from None
    from ..sharding import is_primary

    if not is_primary():  # process 0 of a run over several hosts reports
        return 0
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
        why = {
            "outer_steps": "all outer steps ran",
            "converged": "stopped on a plateau",
            "time_budget": "time budget",
            "diverged": "the losses kept blowing up",
        }
        back = f"; {tr['steps_taken_back']} taken back by the divergence guard" if tr.get("steps_taken_back") else ""
        print(f"  training: {tr['outer_steps_run']} outer steps ({why[tr['stop_reason']]}), {state}{back}")
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
    from .._config import list_presets, preset_description

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
        help="built-in configuration (see `mixerdsr presets`; default: the one of the built-in dataset --data names, "
        "odebench-2 without --data, none for a user's file or with --config)",
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
    hosts = p.add_argument_group(
        "several hosts", "one process per host, the same command on each (README: several devices or hosts)"
    )
    hosts.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        default=None,
        help="join a run over several hosts: process 0's address, or auto (read from the cluster's environment: "
        "SLURM, Open MPI, ...)",
    )
    hosts.add_argument("--num-processes", type=int, default=None, help="processes (hosts) in the run")
    hosts.add_argument("--process-id", type=int, default=None, help="this process's index, 0 to N-1")
    p.set_defaults(func=_cmd_run)
    q = sub.add_parser("presets", help="list the built-in run configurations")
    q.set_defaults(func=_cmd_presets)


# ----------------------------------------------------------------------------------------------
# contexts (export learned contexts and routes of a run)
# ----------------------------------------------------------------------------------------------
