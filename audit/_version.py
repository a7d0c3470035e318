"""The package version, in a module that imports nothing.

Modules that report the version (``cli``, ``runner``) import it from here rather than from
``audit``, whose ``__init__`` imports the pipeline lazily: importing from the package would
close an import cycle ``audit`` → ``audit.runner`` → ``audit``.
"""

__version__ = "0.1.0"
