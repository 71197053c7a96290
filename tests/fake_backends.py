"""Solver backends that misbehave, for the tests of qpm solve and qpm compare. Module-level
classes in an importable module, so a spawned child process can import them by reference."""

from __future__ import annotations

import os
import time

from qpm.assignment.backends.base import Backend
from qpm.assignment.status import Availability


class _Fake(Backend):
    def available(self):
        return Availability.AVAILABLE, ""

    def version(self):
        return ""

    def load(self, form):
        raise AssertionError("never loaded")


class Crash(_Fake):
    name = "crash"

    def available(self):
        os.abort()  # the process dies without a Python exception


class Missing(_Fake):
    name = "missing"

    def available(self):
        return Availability.NOT_INSTALLED, "its package is not installed; pip install it."


class Hang(_Fake):
    name = "hang"

    def load(self, form):
        time.sleep(3600)  # ignores every limit
