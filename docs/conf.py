"""Sphinx configuration for the socs_tcp documentation (``make docs``).

Builds offline: no intersphinx, no remote images. The graphviz extension needs
graphviz's ``dot`` (Debian: ``apt-get install graphviz``).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / '_ext'))

import socs_tcp  # noqa: E402  (after the path set-up)

project = 'socs_tcp'
author = 'the socs_tcp authors'
copyright = '2026, the socs_tcp authors'
release = socs_tcp.__version__
version = '.'.join(release.split('.')[:2])

extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.graphviz',
    'sphinx.ext.viewcode',
    'numpydoc',
    'sphinxarg.ext',
    'myst_parser',
    'simulator_pages',
    'link_states',
]

source_suffix = {'.rst': 'restructuredtext'}
exclude_patterns = ['_build']
templates_path: list[str] = []
html_static_path: list[str] = []
html_theme = 'alabaster'
html_theme_options = {'description': 'Reactor-owned TCP device connections for OCS agents',
                      'fixed_sidebar': True}
html_title = f'socs_tcp {release}'

# numpydoc: no autosummary tables of members (autodoc lists them), no remote links.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
autodoc_member_order = 'bysource'
autodoc_typehints = 'none'   # the numpydoc Parameters sections say it, readably
graphviz_output_format = 'svg'
myst_enable_extensions: list[str] = []
suppress_warnings = ['myst.header']
