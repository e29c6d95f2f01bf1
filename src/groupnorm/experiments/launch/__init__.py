"""Launching runs: the sweep runner, one run in a process, Slurm job arrays, and the results store."""
