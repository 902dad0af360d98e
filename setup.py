"""For the tools and scripts that call setup.py (`python setup.py --version`, `python setup.py
bdist_egg` to package the code for a Spark cluster's --py-files, as the original's scripts did).
The metadata lives in pyproject.toml; this adds none."""

from setuptools import setup

setup()
