"""One record, from its archives to its files, on one node and with no network: safe extraction
(``extract``), the walk of the extracted tree (``walk``), code to 80x80 images (``raster``), the record's
files written (``store``), the whole of it (``process``), and leftovers of a task that died (``leftovers``).
Imports only ``core``."""
