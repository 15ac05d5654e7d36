"""Train models composed of generated layers: ``derivgen train``.

The package's modules, each importing only modules listed before it:

- :mod:`~symbolic.train.errors`: :class:`TrainError`, :class:`Diverged`;
- :mod:`~symbolic.train.data`: the data sets (the digits, the adding problem);
- :mod:`~symbolic.train.models`: one record per model, and the registry;
- :mod:`~symbolic.train.specs`: a user's spec file, generated into the cache, imported;
- :mod:`~symbolic.train.cells`: the specs by kind (built-in or files), checked per role;
- :mod:`~symbolic.train.config`: :class:`Config`, its defaults and checks, resuming;
- :mod:`~symbolic.train.network`: generated layers stacked under a cost, their init, and
  truncated BPTT;
- :mod:`~symbolic.train.optim`: optimizers and learning-rate schedules;
- :mod:`~symbolic.train.checkpoint`: a run's state and its checkpoint file;
- :mod:`~symbolic.train.distributed`: a process's place in a data-parallel run, its
  device, its process group;
- :mod:`~symbolic.train.engine`: what computes the steps, and the NumPy engine;
- :mod:`~symbolic.train.torch_network`, :mod:`~symbolic.train.torch_engine`: the torch
  cells stacked, and the torch engine (imported only by a torch run);
- :mod:`~symbolic.train.launch`: ``--nproc N``: N processes started and watched;
- :mod:`~symbolic.train.result`, :mod:`~symbolic.train.plot`: what a run reports;
- :mod:`~symbolic.train.loop`: :func:`train`, the loop;
- :mod:`~symbolic.train.cli`: the options and :func:`main`.
"""

from symbolic.train.cli import add_arguments, main
from symbolic.train.config import Config
from symbolic.train.errors import TrainError
from symbolic.train.loop import train
from symbolic.train.result import Result, format_metric

__all__ = ["Config", "Result", "TrainError", "add_arguments", "format_metric", "main", "train"]
