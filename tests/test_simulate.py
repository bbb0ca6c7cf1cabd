"""flaxlm.simulate through tools/simulate_mesh.py: per-device memory and FLOPs from ahead-of-time
compiles on fake devices, for 1 device and an 8-device mesh of the same step."""

import json
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import simulate_mesh  # noqa: E402


def test_an_eight_device_mesh_splits_flops_activations_and_parameters(capsys):
    simulate_mesh.main(["--model=bert_tiny", "--seq=64", "--batch=64", "--mesh=1x1x1,4x2x1,1x1x3", "--json"])
    one, mesh, bad = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert one["params"] == mesh["params"] and round(one["params"], -4) == 1_480_000  # BERT-tiny: 1.48M
    assert (one["devices"], mesh["devices"]) == (1, 8)
    # The batch is split 8 ways: so are the FLOPs (but for what every device repeats) and, mostly,
    # the temporaries (activations; gradients and updates of the replicated weights stay whole).
    assert one["flops"] / 8 <= mesh["flops"] < one["flops"] / 8 * 1.15
    assert mesh["temp_bytes"] < one["temp_bytes"] / 4
    # fsdp=2 halves the block matrices (and their Adam moments); embeddings and LayerNorms stay whole.
    # Adam's mu and nu mirror the parameters; + two int32 step counters (Adam's, the schedule's).
    assert one["param_bytes"] == 4 * one["params"] and one["opt_state_bytes"] == 2 * one["param_bytes"] + 8
    assert one["param_bytes"] / 2 < mesh["param_bytes"] < one["param_bytes"]
    assert mesh["opt_state_bytes"] == 2 * mesh["param_bytes"] + 8
    assert mesh["peak_bytes"] < one["peak_bytes"]
    # 2 heads of BERT-tiny cannot be split over a tensor axis of 3: reported, not crashed.
    assert "is not divisible by mesh axis 'tensor' (size 3)" in bad["error"]


def test_mesh_syntax_and_too_many_devices():
    with pytest.raises(SystemExit):
        simulate_mesh.main(["--model=bert_tiny", "--seq=64", "--batch=16", "--mesh=8x1"])
    from flaxlm import simulate
    from flaxlm.errors import ConfigError

    with pytest.raises(ConfigError, match="needs 16 CPU devices but JAX already started with 8"):
        simulate.request_host_devices(16)
