"""Build echotwist's optional C speedups; everything else is in setup.cfg.

The extension (C{echotwist/internals/_speedups.c}) is optional: where it
does not build (no C compiler, not Linux), echotwist installs without it
and runs the same code in Python (C{echotwist.internals.speedups}).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "echotwist.internals._speedups",
            ["echotwist/internals/_speedups.c"],
            optional=True,
        )
    ]
)
