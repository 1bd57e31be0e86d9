"""end_with_agent: armed only under torchrun on Linux, and a parent already gone is noticed."""

from __future__ import annotations

import ctypes
import signal
import sys

import pytest

from autolrs import lifetime

PR_GET_PDEATHSIG = 2

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")


def death_signal() -> int:
    value = ctypes.c_int(-1)
    assert ctypes.CDLL(None).prctl(PR_GET_PDEATHSIG, ctypes.byref(value), 0, 0, 0) == 0
    return value.value


@pytest.fixture
def disarm():
    """Leave this test process without a parent-death signal afterwards."""
    yield
    ctypes.CDLL(None).prctl(lifetime.PR_SET_PDEATHSIG, 0, 0, 0, 0)


def test_nothing_is_armed_outside_torchrun():
    assert lifetime.end_with_agent({}) is False


@linux_only
def test_under_torchrun_the_kernel_is_asked_for_the_signal(disarm):
    assert lifetime.end_with_agent({lifetime.AGENT_ENV: "run-1"}, sig=signal.SIGUSR2) is True
    assert death_signal() == signal.SIGUSR2


@linux_only
def test_an_agent_that_died_before_the_call_is_noticed_at_once(disarm, monkeypatch):
    parents = iter([4242, 1])  # reparented to init between the two reads
    monkeypatch.setattr(lifetime.os, "getppid", lambda: next(parents))
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: received.append(signum))
    try:
        assert lifetime.end_with_agent({lifetime.AGENT_ENV: "run-1"}, sig=signal.SIGUSR2)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert received == [signal.SIGUSR2]


def test_off_linux_it_does_nothing(monkeypatch):
    monkeypatch.setattr(lifetime.sys, "platform", "darwin")
    assert lifetime.end_with_agent({lifetime.AGENT_ENV: "run-1"}) is False
