"""pytest setup for the normkit package tests (run by ctest: see capi/python/CMakeLists.txt)."""

import pathlib
import sys

# The tests import the float64 reference and the demo as plain modules.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))


def pytest_sessionfinish(session, exitstatus):
    # pytest's exit code 5 alone reads like a crash under ctest: say what it means.
    if exitstatus == 5:
        print(f"\nnormkit: no Python test ran under {session.config.args} (none collected, or all "
              "deselected): check the test path, file names and -k", file=sys.stderr)
