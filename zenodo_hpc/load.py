"""The readers at their documented import path, ``zenodo_hpc.load.load_images``, ``load_files`` and
``load_metadata``; they live in :mod:`zenodo_hpc.dataset.load`."""

from .dataset.load import load_files, load_images, load_metadata

__all__ = ["load_files", "load_images", "load_metadata"]
