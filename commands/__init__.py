"""The command line (``train.py``): the Lightning CLI with ``mine`` and ``demo``, run directories, the demo."""
