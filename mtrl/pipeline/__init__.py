"""The stage framework: what a stage and its units are, how they run (fingerprints, skipping, workers,
checkpoints), where artifacts live in a run directory, and the list of stages in pipeline order."""
