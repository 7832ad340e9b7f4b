"""Training: the LightningCLI (`forecast fit|validate|test|predict`), the LightningModule, its callbacks, run folders
and checkpoints, run-config resolution, and the baselines fitted on the same samples."""
