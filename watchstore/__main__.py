"""``python -m watchstore``: the ``watchstore`` command (see ``watchstore.cli.main``)."""

from watchstore.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
