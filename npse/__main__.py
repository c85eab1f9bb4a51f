"""``python -m npse ...``: the same as the ``npse`` command."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
