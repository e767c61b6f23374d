"""The suite's skip policy (tests/conftest.py): only tests marked ``gpu`` or ``mmdet`` may skip; any other skip
(data or an extra the README installs) fails, so a broken install cannot pass CI as a row of skips."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT

pytest_plugins = ["pytester"]

PROBES = """
import pytest

@pytest.mark.gpu
@pytest.mark.skipif(True, reason="needs a CUDA GPU")
def test_gpu():
    pass

@pytest.mark.mmdet
@pytest.mark.skipif(True, reason="no mmcv")
def test_mmdet():
    pass

@pytest.mark.skipif(True, reason="Fashion-MNIST missing")
def test_data():
    pass

def test_extra():
    pytest.importorskip("a_module_that_is_not_installed")

@pytest.mark.xfail(reason="known")
def test_expected_failure():
    assert False
"""


ARGS = ("-p", "no:cacheprovider", "--continue-on-collection-errors")


@pytest.fixture
def probe(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest("from tests.skip_policy import pytest_make_collect_report, pytest_runtest_makereport\n")
    pytester.makeini("[pytest]\nmarkers =\n    gpu: x\n    mmdet: x\n    slow: x\n")
    pytester.makepyfile(test_probe=PROBES)
    pytester.makepyfile(test_module_skip='import pytest\npytest.importorskip("not_installed_either")\n')
    return pytester


def test_only_gpu_and_mmdet_tests_may_skip(probe, monkeypatch):
    monkeypatch.delenv("ZOO_ALLOWED_SKIPS", raising=False)
    result = probe.runpytest_subprocess(*ARGS)
    result.assert_outcomes(skipped=2, failed=1, errors=2, xfailed=1)  # a skipif fails in setup: an error
    result.stdout.fnmatch_lines(["*only tests marked gpu or mmdet may skip*"])


def test_the_mmdet_block_allows_only_gpu_skips(probe, monkeypatch):
    monkeypatch.setenv("ZOO_ALLOWED_SKIPS", "gpu")
    probe.runpytest_subprocess(*ARGS).assert_outcomes(skipped=1, failed=1, errors=3, xfailed=1)


def test_any_restores_plain_skipping(probe, monkeypatch):
    monkeypatch.setenv("ZOO_ALLOWED_SKIPS", "any")
    probe.runpytest_subprocess(*ARGS).assert_outcomes(skipped=5, xfailed=1)
