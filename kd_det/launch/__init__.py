"""Launching many runs: configs x seeds through serial, local or Slurm (submitit) executors (:mod:`.sweep`)."""
