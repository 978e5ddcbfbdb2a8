"""``python -m watchstore``: the ``watchstore`` command (see ``watchstore._cli``)."""

from watchstore._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
