"""pip install ./python (no network: setuptools only, from Debian's python3-setuptools).
The checkout's build/libmemtune.so, when built, is installed beside the package (copied into
the wheel, never into this source tree); without it the package finds the library through
MEMTUNE_LIB."""
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

here = os.path.dirname(os.path.abspath(__file__))
built = os.path.join(here, "..", "build", "libmemtune.so")


class build_py_with_library(build_py):
    def run(self):
        super().run()
        if os.path.isfile(built):
            shutil.copy2(built, os.path.join(self.build_lib, "memtune", "libmemtune.so"))


setup(
    name="memtune",
    version="0.1.0",
    description="Python bindings (ctypes) for the memtune fine-tuning and inference library",
    packages=["memtune"],
    cmdclass={"build_py": build_py_with_library},
    python_requires=">=3.8",
)
