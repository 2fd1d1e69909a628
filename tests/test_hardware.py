"""The accelerator table: datasheet figures, NVML name matching, user entries."""

from __future__ import annotations

import pytest

from carbonbench.errors import ConfigError, UserError
from carbonbench.hardware import (
    BLOOM_A100_KGCO2E,
    HARDWARE_FILE_ENV,
    get_hardware,
    hardware_table,
    known_hardware,
    match_device,
)


@pytest.mark.parametrize(
    "nvml_name, expected",
    [
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
        ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
        ("Tesla V100-SXM2-32GB", "v100-sxm2-32gb"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA L4", "l4"),
        ("Tesla T4", "t4"),
        ("  nvidia   h100 80gb hbm3 ", "h100-sxm"),  # case and spacing do not matter
    ],
)
def test_match_device_by_nvml_name(nvml_name, expected):
    assert match_device(nvml_name).name == expected


@pytest.mark.parametrize(
    "nvml_name",
    # Different TDP or peak from the table rows, so they must not borrow them.
    [
        "NVIDIA A100-PCIE-40GB",
        "NVIDIA A100 80GB PCIe",
        "NVIDIA H100 NVL",
        "NVIDIA H200 NVL",
        "Tesla V100-PCIE-16GB",
        "Intel(R) Xeon(R) Platinum 8480+",
        "",
        None,
        float("nan"),
    ],
)
def test_unmatched_devices_get_none(nvml_name):
    assert match_device(nvml_name) is None


def test_datasheet_figures_from_hardware_md():
    a100 = get_hardware("a100-80gb")
    assert (a100.tdp_w, a100.peak_bf16_flops, a100.memory_bytes) == (400, 312e12, 80e9)
    assert a100.memory_bandwidth_bytes_per_s == pytest.approx(2.039e12)
    h100 = get_hardware("h100-sxm")
    assert (h100.tdp_w, h100.peak_bf16_flops) == (700, 989e12)
    assert get_hardware("t4").tdp_w == 70
    assert get_hardware("l4").peak_bf16_flops == 121e12
    for hw in hardware_table().values():
        assert hw.source and hw.nvml_names


def test_embodied_defaults_only_where_published():
    assert get_hardware("a100-80gb").embodied_kgco2e == BLOOM_A100_KGCO2E == 150.0
    assert "BLOOM" in get_hardware("a100-40gb").embodied_source
    assert get_hardware("h100-sxm").embodied_kgco2e is None


def test_get_hardware_by_key_description_or_nvml_name():
    assert get_hardware("A100-80GB").name == "a100-80gb"
    assert get_hardware("NVIDIA A100 SXM4 80GB").name == "a100-80gb"  # the OPT card's wording
    assert get_hardware("NVIDIA H100 80GB HBM3").name == "h100-sxm"


def test_unknown_hardware_lists_the_known_ones():
    with pytest.raises(UserError) as err:
        get_hardware("a100-80")
    message = str(err.value)
    assert "unknown hardware 'a100-80'" in message
    assert "did you mean 'a100-80gb'" in message
    for name in known_hardware():
        assert name in message


USER_FILE = """
hardware:
  - name: mi300x
    description: AMD Instinct MI300X
    tdp_w: 750
    memory_gb: 192
    peak_bf16_tflops: 1307
    memory_bandwidth_gb_per_s: 5300
    nvml_names: ["AMD Instinct MI300X.*"]
    source: AMD datasheet
  - name: h100-sxm
    tdp_w: 700
    memory_gb: 80
    peak_bf16_tflops: 989
    memory_bandwidth_gb_per_s: 3350
    nvml_names: ["NVIDIA H100 80GB HBM3"]
    embodied_kgco2e: 200
    embodied_source: my own LCA
"""


def test_user_entries_add_and_override(tmp_path, monkeypatch):
    path = tmp_path / "hw.yaml"
    path.write_text(USER_FILE)
    mi = get_hardware("mi300x", str(path))
    assert mi.peak_bf16_flops == pytest.approx(1307e12)
    assert mi.memory_bytes == 192e9
    assert str(path) in mi.source
    assert match_device("AMD Instinct MI300X OAM", str(path)).name == "mi300x"
    assert get_hardware("h100-sxm", str(path)).embodied_kgco2e == 200
    # The environment variable works the same way.
    monkeypatch.setenv(HARDWARE_FILE_ENV, str(path))
    assert "mi300x" in known_hardware()
    assert match_device("NVIDIA H100 80GB HBM3").embodied_source == "my own LCA"


@pytest.mark.parametrize(
    "body, needle",
    [
        (
            "hardware:\n  - {name: x, tdp_w: 0, memory_gb: 1, peak_bf16_tflops: 1, memory_bandwidth_gb_per_s: 1}",
            "hardware[0].tdp_w",
        ),
        (
            "hardware:\n  - {name: x, tdp_w: 1, memory_gb: 1, peak_bf16_tflops: 1, memory_bandwidth_gb_per_s: 1, tdp: 3}",
            "unknown key",
        ),
        (
            "hardware:\n  - {name: x, tdp_w: 1, memory_gb: 1, peak_bf16_tflops: 1, memory_bandwidth_gb_per_s: 1, "
            "embodied_kgco2e: 100}",
            "embodied_source",
        ),
        (
            "hardware:\n  - {name: x, tdp_w: 1, memory_gb: 1, peak_bf16_tflops: 1, memory_bandwidth_gb_per_s: 1, "
            "nvml_names: ['(']}",
            "regular expression",
        ),
    ],
)
def test_bad_user_file_is_a_config_error(tmp_path, body, needle):
    path = tmp_path / "hw.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        hardware_table(str(path))
    assert needle in str(err.value)
