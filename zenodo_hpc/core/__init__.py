"""What every stage shares: the settings (``config``), the one error users see (``errors``), the run directory
and its files and markers (``state``), who holds a lock or runs a task (``liveness``), and what a Zenodo
record is (``records``). Imports nothing else of the package."""
