"""The installed version of socs_tcp.

The version comes from git (setuptools-scm) when the package is built or
installed, and is read back here from the installed distribution's metadata,
so it is right for a wheel, an sdist and an editable install alike. An
editable install keeps the version it had when it was installed until it is
installed again.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__: str = version('socs_tcp')
except PackageNotFoundError:   # imported from a source tree that was never installed
    __version__ = '0+unknown'
