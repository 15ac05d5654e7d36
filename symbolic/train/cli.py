"""The command line of ``derivgen train``: its options, the :class:`Config` they describe,
and :func:`main`.

The help lists every registered model's defaults, so a new model's record shows there
with nothing else to edit.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from symbolic import write
from symbolic.train.cells import cells, spec_kind
from symbolic.train.config import (
    BACKENDS,
    CLASS_WEIGHTS,
    DTYPES,
    OPTIMIZERS,
    READOUTS,
    SCHEDULES,
    Config,
)
from symbolic.train.distributed import rank_from_env
from symbolic.train.errors import TrainError
from symbolic.train.loop import train
from symbolic.train.models import COMMON_DEFAULTS, ModelRecord, model_choices, records


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 64 or 64,32, got {text!r}") from None
    if any(size <= 0 for size in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return sizes


def _describe(record: ModelRecord) -> str:
    """One model's defaults, as the help lists them."""
    values = {**COMMON_DEFAULTS, **record.defaults}
    text = (
        f"hidden {','.join(map(str, values['hidden']))}, {values['optimizer']} lr "
        f"{values['lr']:g} {values['schedule']}, {values['epochs']} epochs, batch "
        f"{values['batch_size']}, clip {values['clip']:g}, {values['dtype']}"
    )
    if record.data_options:
        text += f",\n{'':16}" + _changes({name: values[name] for name in record.data_options})
    return text


def _changes(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{name.replace('_', '-')} {value}" for name, value in values.items())


def _description() -> str:
    """The help's text: what the command does, and every model's defaults."""
    rows = [
        f"  {record.name:<14}{_describe(record)}\n{'':16}cell "
        f"{record.default_cell} (--cell: {', '.join(cells(record.cell_kind))} or PATH.toml)"
        for record in records()
    ]
    rows += [
        f"  {record.name} --cell {cell}: {_changes(values)}"
        for record in records()
        for cell, values in record.cell_defaults.items()
    ]
    aliases = ", ".join(f"{old} = {record.name}" for record in records() for old in record.aliases)
    return (
        "Train a model built from generated modules: checkpoints, a plot and a summary "
        "go to --out.\n\nDefaults (any option overrides them):\n"
        + "\n".join(rows)
        + f"\n\nOld model names, still accepted: {aliases} (with the GRN cell by default)."
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``derivgen train`` (unset options take the model's defaults)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = _description()
    _add_model_options(parser)
    _add_training_options(parser)
    _add_run_options(parser)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """What to train: the model, its cell, the backend."""
    parser.add_argument(
        "--model",
        choices=model_choices(),
        help="what to train (mlp; with --resume: the checkpoint's)",
    )
    parser.add_argument(
        "--cell",
        metavar="SPEC",
        help="the spec of the hidden layers: recurrent for digits-rows and adding (grn), "
        "feedforward for mlp (dense_sigmoid); a built-in name or a spec file PATH.toml "
        "(generated and validated on the fly)",
    )
    parser.add_argument(
        "--spec",
        metavar="SPEC",
        action="append",
        help="the readout layer (a feedforward spec) or the cost (a cost spec; "
        "squared_error): a built-in name or a spec file PATH.toml; may be given twice",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="generated modules to use (numpy); torch: the cells' nn.Module (jax: see the README)",
    )


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    """How to train: the optimizer, the run's length, the sizes, the init."""
    parser.add_argument("--optimizer", choices=OPTIMIZERS, help="sgd (with momentum) or adam")
    parser.add_argument("--lr", type=float, help="learning rate")
    parser.add_argument(
        "--schedule", choices=SCHEDULES, help="learning rate: constant, or cosine decay to 0"
    )
    parser.add_argument("--momentum", type=float, help="SGD momentum (0.9)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="passes over the training set")
    length.add_argument("--steps", type=int, help="optimizer steps in all, instead of epochs")
    parser.add_argument("--batch-size", type=int, help="samples per step")
    parser.add_argument("--hidden", type=_hidden, help="hidden sizes, e.g. 64 or 64,32")
    parser.add_argument("--seq-len", type=int, help="adding problem: sequence length (100)")
    parser.add_argument("--n-train", type=int, help="adding problem: training sequences")
    parser.add_argument("--n-test", type=int, help="adding problem: test sequences")
    parser.add_argument(
        "--readout", choices=READOUTS, help="recurrent models: read out at the last or every step"
    )
    parser.add_argument("--clip", type=float, help="clip the gradient's global norm (0: off)")
    parser.add_argument(
        "--tbptt",
        type=int,
        metavar="K",
        help="truncated BPTT: chunks of K steps, the state carried across them, "
        "backpropagation within each (0: whole sequences)",
    )
    parser.add_argument(
        "--class-weights",
        choices=CLASS_WEIGHTS,
        help="balanced: weigh each class by n / (classes x its count), through the cost's "
        "unit input (a cost spec with [inputs], e.g. weighted_softmax_cross_entropy)",
    )
    parser.add_argument("--seed", type=int, help="seed of the init and the shuffling (0)")
    parser.add_argument("--dtype", choices=DTYPES, help="float32 or float64")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """Where the run writes, resuming and stopping, what it shows."""
    parser.add_argument(
        "--out",
        type=write.path_argument,
        help="output folder (runs/<model>, or runs/<model>-<cell>)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    parser.add_argument(
        "--stop-after",
        type=int,
        help="stop after this many steps (checkpointed; --resume continues)",
    )
    parser.add_argument(
        "--nproc",
        type=int,
        help="torch: train data-parallel in N processes on this machine (under torchrun: "
        "its processes)",
    )
    parser.add_argument(
        "--device", help="torch: cpu, cuda or cuda:N (each process's CUDA device if present)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-plot", action="store_true", help="do not save the plot")


def _top_specs(given: list[str] | None) -> dict[str, str]:
    """``--spec`` options by the field each one sets: ``readout_spec`` (a feedforward
    spec) or ``cost`` (a cost spec).

    Raises:
        TrainError: A spec of another kind, an unknown name, or two of one kind.
    """
    fields = {"feedforward": "readout_spec", "cost": "cost"}
    chosen: dict[str, str] = {}
    for spec in given or []:
        kind = spec_kind(spec)
        if kind not in fields:
            what = f"a {kind} spec: give it with --cell" if kind else "no built-in spec"
            raise TrainError(f"--spec {spec}: {what} (--spec takes a feedforward or a cost spec)")
        if fields[kind] in chosen:
            raise TrainError(f"--spec {spec}: a second {kind} spec (after {chosen[fields[kind]]})")
        chosen[fields[kind]] = spec
    return chosen


def config_from_args(args: argparse.Namespace) -> Config:
    """The :class:`Config` that parsed ``derivgen train`` options describe."""
    return Config(
        **_top_specs(args.spec),
        model=args.model,
        cell=args.cell,
        backend=args.backend,
        optimizer=args.optimizer,
        lr=args.lr,
        schedule=args.schedule,
        momentum=args.momentum,
        epochs=args.epochs,
        steps=args.steps,
        batch_size=args.batch_size,
        hidden=args.hidden,
        seq_len=args.seq_len,
        n_train=args.n_train,
        n_test=args.n_test,
        readout=args.readout,
        clip=args.clip,
        tbptt=args.tbptt,
        class_weights=args.class_weights,
        seed=args.seed,
        dtype=args.dtype,
        out=args.out,
        resume=args.resume,
        stop_after=args.stop_after,
        nproc=args.nproc,
        device=args.device,
        progress=not args.no_progress,
        plot=not args.no_plot,
    )


def main(args: argparse.Namespace) -> int:
    """``derivgen train``: 0 when the run finished or stopped as asked, 1 when it
    diverged, 2 on a bad configuration (or a failed process of a distributed run).
    In a group of processes (torchrun), process 0 prints the summary."""
    try:
        result = train(config_from_args(args))
        speaks = rank_from_env() == 0
    except TrainError as exc:
        print(f"derivgen train: error: {exc}", file=sys.stderr)
        return 2
    if speaks:
        print(result.summary())
    return 1 if result.status == "diverged" else 0
