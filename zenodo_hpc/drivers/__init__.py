"""The drivers that compose the stages into what a command does: the decision after a round and the
finishing job (``finish``), ``run`` (``pipeline``), ``update`` and its release (``update``, ``releasing``),
and ``schedule``. Only the command line and the demo import them."""
