"""The machine record a result carries, and how the report names it."""

from __future__ import annotations

import platform

import torch

from bench.machine import cpu_model, describe, machine_record


def test_cpu_model_reads_the_model_name_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC 9B14\n")
    assert cpu_model(info) == "AMD EPYC 9B14"


def test_cpu_model_falls_back_without_cpuinfo(tmp_path):
    expected = platform.processor() or platform.machine() or "unknown"
    assert cpu_model(tmp_path / "missing") == expected
    (tmp_path / "empty").write_text("processor\t: 0\nmodel name\t:   \n")
    assert cpu_model(tmp_path / "empty") == expected


def test_machine_record_names_torch_and_its_kernel_path():
    record = machine_record()
    assert record["torch"] == torch.__version__
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["cpu"] and record["platform"] == platform.platform()


def test_describe_names_cpu_and_kernels_and_reads_older_records():
    new = {"platform": "Linux-x86_64", "torch": "2.13.0+cpu", "cpu": "AMD EPYC",
           "cpu_capability": "AVX512"}
    assert describe(new) == "Linux-x86_64, AMD EPYC, AVX512 kernels, torch 2.13.0+cpu"
    old = {"platform": "Linux-x86_64", "torch": "2.13.0+cpu"}  # cost.json before the CPU
    assert describe(old) == "Linux-x86_64, torch 2.13.0+cpu"
