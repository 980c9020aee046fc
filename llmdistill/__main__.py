"""``python -m llmdistill``: the same command as ``llmdistill``."""

from llmdistill.cli import app

if __name__ == "__main__":
    app()
