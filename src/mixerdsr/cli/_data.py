"""``mixerdsr data``: list, generate and show datasets."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from ._common import CLIError, _nonneg_int, _print_help, _print_names


def _cmd_data_list(args: argparse.Namespace) -> int:
    from ..data import list_datasets

    _print_names(list_datasets())
    return 0


def _cmd_data_generate(args: argparse.Namespace) -> int:
    from ..data import generate_dataset, save_dataset

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

    from ..data import SPLITS, list_datasets, load_dataset, read_meta, resolve_dataset

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
        from ..plots import plot_dataset_overview

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
