"""forecast.sizing.devices: precision, tensor cores and device counts follow the accelerator a run uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from synthetic_run import base_args, data_dir, fitted  # noqa: F401  (fixtures)

from forecast.cli import main as forecast_main
from forecast.core.errors import ForecastError
from forecast.sizing.devices import check_nodes
from forecast.training.cli import cli_main


def test_precision_follows_the_accelerator_used_not_the_machine(data_dir, tmp_path):
    from forecast.sizing.devices import accelerator_kind, default_precision

    assert default_precision(accelerator_kind("cpu", cuda_available=True)) == "32-true"
    assert default_precision(accelerator_kind("auto", cuda_available=True)) == "bf16-mixed"
    assert default_precision(accelerator_kind("gpu", cuda_available=True), bf16_supported=False) == "16-mixed"
    assert default_precision(accelerator_kind("auto", cuda_available=False)) == "32-true"
    cli = cli_main([*base_args(data_dir, tmp_path), "--trainer.accelerator=cpu"], run=False)
    assert cli.trainer.precision == "32-true"
    chosen = cli_main([*base_args(data_dir, tmp_path), "--trainer.precision=bf16-mixed"], run=False)
    assert chosen.trainer.precision == "bf16-mixed"  # a precision the user sets is kept


def test_fp32_matmuls_use_tensor_cores_on_cuda_only():
    from forecast.sizing.devices import use_tensor_cores

    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        use_tensor_cores("cpu")
        assert torch.get_float32_matmul_precision() == "highest"
        use_tensor_cores("cuda")
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("devices,message", [("2", "run on one device"), ("0,1", "run on one device"),
                                             ("gpu", "trainer.devices: 'gpu' is not")])
def test_evaluation_on_several_devices_is_refused(fitted, capsys, devices, message):
    cli, _ = fitted
    config = str(Path(cli.trainer.log_dir) / "config.yaml")
    assert forecast_main(["test", "--config", config, f"--trainer.devices={devices}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_several_nodes_need_a_launch_that_says_so(monkeypatch):
    """Without a cluster or the variables of a manual multi-node launch, rank 0 would wait 30 minutes
    for nodes that never come; with them (or one node) nothing is refused."""
    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME", "TORCHELASTIC_RUN_ID", "LSB_JOBID", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ForecastError, match="num_nodes=2, but no cluster launched"):
        check_nodes(2, env={})
    check_nodes(1, env={})
    check_nodes(2, env={"MASTER_ADDR": "10.0.0.1", "NODE_RANK": "1"})


def test_cuda_asked_where_none_is_visible_is_one_line():
    """Either answer of torch.cuda.is_available(), forced: refused without CUDA, passed with it."""
    from forecast.sizing.devices import check_visible

    with pytest.raises(ForecastError, match="asks for CUDA, but no CUDA device is visible"):
        check_visible("cuda", cuda_available=False)
    check_visible("cuda", cuda_available=True)
    check_visible("cpu", cuda_available=False)


def test_device_ids_and_the_default_device_where_cuda_is_visible(monkeypatch, tmp_path):
    """The CUDA answers of `device_ids`/`default_device`, forced on the CPU: ids count among the visible
    devices and come back as CUDA_VISIBLE_DEVICES names (numbers or UUIDs); a report parent retrains
    beside its workers exactly when worker 0's device is its own default one."""
    from forecast.core.workers import parent_works
    from forecast.sizing import devices
    from forecast.sizing.devices import default_device, device_ids

    (tmp_path / "nvidiactl").touch()
    monkeypatch.setattr(devices, "GPU_NODES", (str(tmp_path / "nvidiactl"),))  # a GPU node: torch is asked
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert device_ids(None) == ["0", "1"] and default_device() == "0"
    assert device_ids("1,0,1") == ["1", "0", "1"]
    for visible in ("3,5", "GPU-a,GPU-b"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        names = visible.split(",")
        assert device_ids(None) == names and default_device() == names[0]
        assert parent_works(device_ids(None), default_device())  # the default: every visible device
        assert not parent_works(device_ids("1,0"), default_device())  # worker 0 pinned to the second one
    with pytest.raises(ForecastError, match="--devices 2: 2 CUDA device"):
        device_ids("2")


def test_no_gpu_node_means_no_cuda_without_loading_torch(monkeypatch, tmp_path):
    """Without a GPU device node a Linux process sees no CUDA device, and says so without importing
    torch (a `--jobs` parent starts its workers before its own ~2 s of torch); with a node, torch's
    count is the answer (here a CPU build's 0, or a patched 3)."""
    from forecast.sizing import devices

    if sys.platform != "linux":
        pytest.skip("the device-node shortcut is Linux's")
    monkeypatch.setattr(devices, "GPU_NODES", (str(tmp_path / "absent"),))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)  # would be wrong to ask
    assert devices.cuda_device_count() == 0 and devices.device_ids(None) == [] and devices.default_device() is None
    (tmp_path / "absent").touch()
    assert devices.cuda_device_count() == 3
    code = ("import sys; from forecast.sizing import devices; devices.GPU_NODES = ('/nonexistent/node',); "
            "print(devices.device_ids(None), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] False"
