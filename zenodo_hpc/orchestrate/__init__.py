"""Running the records' tasks, on SLURM or locally: shards and generations (``plan``), the executor interface
and the local executors (``executor``), the SLURM plugin (``slurm``: knows no pipeline stage; the task and
the finishing job are handed in), what to submit next (``submit``), the task itself (``worker``), the
chain of rounds (``chain``) and where a run stands (``status``)."""
