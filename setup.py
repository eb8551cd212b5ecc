"""Packaging is in setup.cfg; this file only ships ``socs_tcp-activation.pth``.

The ``.pth`` file goes to the root of site-packages, where the interpreter
runs its one line at start-up (``SOCS_TCP`` in the environment switches SOCS's
transports to socs_tcp; unset, the line does nothing else). setuptools has no
option for such a file, so ``build_py`` copies it: into the build tree for a
wheel, and, for an editable install (``pip install -e .``), straight into the
editable wheel, which otherwise holds only links to the source tree.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = 'socs_tcp-activation.pth'


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):
            # editable_wheel installs into the wheel it builds ("install_lib")
            # and ignores what build_py leaves in build_lib.
            target = self.get_finalized_command('install').install_lib
        else:
            target = self.build_lib
        self.copy_file(PTH, os.path.join(target, PTH), preserve_mode=False)

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), os.path.join(self.build_lib, PTH)]


setup(cmdclass={'build_py': BuildPyWithPth})
