"""The dataset made of the records: read back (``decode``, ``load``, ``image``: folders and squashfs images),
packed into one verified image (``pack``), exported by language (``organize``, ``png``), published on Kaggle
(``publish``), released with a changelog and a feed (``release``) and announced (``notify``). Never imports
the orchestration: it works from the run directory alone."""
