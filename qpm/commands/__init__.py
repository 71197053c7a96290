"""Sub-commands of the ``qpm`` CLI, one module each (see :mod:`qpm.cli`)."""
