"""Reproduction of the GN paper's experiments (Tables 1-3, Figures 1-5) on real data, in subpackages by topic.

- :mod:`.data`: the formats of a data directory (one map: detect, read, describe), their readers, subsets,
  held-out images and the batches of each epoch;
- :mod:`.models`: the architectures by name (one map) and the networks that build them (ResNets, VGG);
- :mod:`.protocol`: a run's configuration and identity, the presets, the plan of each experiment (one map);
- :mod:`.training`: one run: the step loop, evaluation, BN's evaluation, the results row, the device;
- :mod:`.launch`: sweeps (emulated workers, side-by-side processes, ``torchrun``), one run per process, Slurm;
- :mod:`.report`: the report's tables, statistics, verdicts and plots (one map of figures);
- :mod:`.store`: the results store (rows, checkpoints, locks) they all share; :mod:`.cli`: ``groupnorm reproduce``
  and ``groupnorm report``.

Where each kind of change goes: ``docs/layout.md``. ``config`` and ``train`` are deprecated aliases of
``protocol`` and ``training``.
"""
