"""``llmdistill`` with the tests' scripted teacher backend registered, for tests that launch the
CLI in subprocesses (several training processes) on a config made by ``make_config``."""

from llmdistill.backends import BACKENDS

BACKENDS["scripted"] = "tests.conftest:ScriptedBackend"

from llmdistill.cli import app  # noqa: E402

if __name__ == "__main__":
    app()
