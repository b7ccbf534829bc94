"""The command line (``train.py``): the Lightning CLI with ``mine``, ``demo`` and ``check-data``, run directories, the
demo."""
