"""Developer tools of the watchstore repository (not part of the package)."""
