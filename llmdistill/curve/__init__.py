"""``llmdistill curve``: how many teacher traces a student needs. Test accuracy against the share
of the training problems (and the teacher traces and tokens they hold), per training mode and seed,
each point the config's own recipe in a folder of its own (``run``); the report, picture and
numbers (``report``)."""

from llmdistill.curve.run import curve

__all__ = ["curve"]
