"""The suite's skip policy, as pytest hooks that ``tests/conftest.py`` imports.

A test may skip only for what the README's test command cannot install: a GPU (tests marked ``gpu``) and the
mmdet stack, whose full mmcv has no wheel (tests marked ``mmdet``). Any other skip — data, or an extra that the
command installs — means the install is broken, so it is reported as a failure; a module-level skip carries no
marker and is never allowed. ``ZOO_ALLOWED_SKIPS`` overrides the markers (``.ci/run``'s mmdet block sets ``gpu``:
there mmdet is installed), and ``ZOO_ALLOWED_SKIPS=any`` restores plain skipping.
"""

from __future__ import annotations

import os

import pytest

ALLOWED_SKIP_MARKERS = ("gpu", "mmdet")


def allowed_skip_markers() -> set[str] | None:
    """The markers whose tests may skip, or None when any test may."""
    value = os.environ.get("ZOO_ALLOWED_SKIPS")
    if value is None:
        return set(ALLOWED_SKIP_MARKERS)
    if value.strip() == "any":
        return None
    return {m.strip() for m in value.split(",") if m.strip()}


def _fail_the_skip(report, where: str, markers: set[str]) -> None:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"{where} skipped ({reason}), but only tests marked {' or '.join(sorted(markers)) or '(none)'} may skip: "
        "the README's test command installs everything else, so this install is incomplete "
        "(ZOO_ALLOWED_SKIPS=any allows it)"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    markers = allowed_skip_markers()
    if markers is None or not report.skipped or hasattr(report, "wasxfail"):
        return
    if not any(item.get_closest_marker(name) for name in markers):
        _fail_the_skip(report, "this test", markers)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    markers = allowed_skip_markers()
    if markers is not None and report.skipped:
        _fail_the_skip(report, f"collecting {collector.nodeid}", markers)
