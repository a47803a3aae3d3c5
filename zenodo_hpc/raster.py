"""The rasterizer at its documented import path, ``zenodo_hpc.raster.rasterize``; it lives in
:mod:`zenodo_hpc.record.raster`."""

from .record.raster import rasterize

__all__ = ["rasterize"]
