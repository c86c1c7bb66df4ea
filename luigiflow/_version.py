"""The package version, in one place: pyproject.toml reads it, runs record it.

SemVer: before 1.0 a minor release may break (docs/upgrading.md lists how), a patch
release never does.
"""

__version__ = "0.2.0"
