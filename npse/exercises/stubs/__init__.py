"""The exercises' stub files: copy one out with ``python -m npse.exercises start NAME DIR``."""
