"""An example llmdistill plugin: a backend, a checker and a filter (see pyproject.toml)."""
