"""The stages: ``generate``, ``filter``, ``train``, ``evaluate`` (and ``export``). Each is a
package (or module) whose ``__init__`` exposes the stage function; stages import the core
(``llmdistill.config``, ``records``, ``outputs``, ``answers``, ``backends``...), never each other."""
