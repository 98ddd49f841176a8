"""setuptools shim: only here to wire the cffi extension in (cffi_modules); metadata lives in pyproject."""
from setuptools import setup

setup(cffi_modules=["csrc/build_native.py:ffibuilder"])
