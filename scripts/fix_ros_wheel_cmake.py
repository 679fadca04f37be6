"""Rewrite build-machine include paths baked into the ROS 2 PyPI wheels' CMake exports.

The ros-kilted-* wheels ship `share/**/*Export.cmake` files that name the wheel builder's
Python headers (`/opt/python/cpXY-cpXY/include/pythonX.Y`) and numpy include dir. CMake
refuses a non-existent include directory, so building any interface package (lwd_msgs)
fails until those paths point at this venv's. Idempotent: files already fixed are skipped.
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

import numpy

_PY_INCLUDE = re.compile(r"/opt/python/cp\d+-cp\d+/include/python\d+\.\d+")
_NUMPY_INCLUDE = re.compile(r"/opt/python/cp\d+-cp\d+/lib/python\d+\.\d+/site-packages/numpy/_core/include")


def fix_tree(prefix: Path) -> list[Path]:
    """Fix every Export.cmake under prefix/share; return the files that changed."""
    py_include = sysconfig.get_paths()["include"]
    np_include = numpy.get_include()
    changed = []
    for path in sorted((prefix / "share").rglob("*Export.cmake")):
        text = path.read_text()
        fixed = _NUMPY_INCLUDE.sub(np_include, text)
        fixed = _PY_INCLUDE.sub(py_include, fixed)
        if fixed != text:
            path.write_text(fixed)
            changed.append(path)
    return changed


def main() -> int:
    prefix = Path(sys.prefix)
    changed = fix_tree(prefix)
    print(f"fix_ros_wheel_cmake: {len(changed)} file(s) rewritten under {prefix}/share")
    return 0


if __name__ == "__main__":
    sys.exit(main())
