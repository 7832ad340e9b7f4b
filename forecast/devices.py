"""How many devices a run uses: the search, the report and evaluation each need exactly one."""

from __future__ import annotations

from typing import Any

from forecast.errors import ForecastError


def device_count(devices: Any) -> int:
    """How many devices a `trainer.devices` value asks for ("auto" and -1 count as more than one)."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    text = str(devices).strip()
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    if text == "auto":
        return -1
    try:
        count = int(text)
    except ValueError:
        raise ForecastError(f"--trainer.devices={devices}: expected a count, a list of device ids, or auto") from None
    return count


def one_device(trainer: Any, what: str) -> None:
    """Refuse a trainer config that runs on more than one device or node (`what` says who needs one).

    Raises:
        ForecastError: `devices` other than 1 (or one id), or `num_nodes` > 1.
    """
    devices, nodes = trainer.get("devices"), trainer.get("num_nodes") or 1
    if device_count(devices) != 1 or int(nodes) != 1:
        raise ForecastError(f"{what} run on one device (got --trainer.devices={devices}, --trainer.num_nodes={nodes}): "
                            "under DDP the shards are padded with repeated windows and each rank holds part "
                            "of the predictions; train on several devices with `forecast fit`")
