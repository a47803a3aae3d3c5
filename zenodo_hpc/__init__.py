"""zenodo-hpc: build the Zenodo-ML dataset (code images of Zenodo software records) on SLURM clusters."""

__version__ = "0.1.0"
