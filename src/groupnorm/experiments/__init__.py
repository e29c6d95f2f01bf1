"""Reproduction of the GN paper's experiments (Tables 1-3, Figures 1, 4, 5) on Fashion-MNIST-format data.

Modules: ``idx`` (IDX file reader), ``data`` (splits, subsets, batches), ``models`` (ResNets by norm name),
``config`` (run configs, presets, experiments), ``train`` (one run, emulated or DDP), ``store`` (durable
results), ``runner`` (sweeps), ``report`` (tables and plots), ``cli`` (``groupnorm reproduce`` / ``report``).
"""
