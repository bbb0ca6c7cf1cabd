"""What a train step needs per device on a mesh, without the devices: compile it ahead of time.

`simulate(model_config, (data, fsdp, tensor), batch_size, seq_len)` builds the
Runner's mesh train step for that many *fake host (CPU) devices*, lowers it
with abstract inputs (jax.ShapeDtypeStruct: nothing is allocated at full
size) and compiles it. The compiled executable is the per-device SPMD
program, so its `memory_analysis()` and `cost_analysis()` are per device.

Caveats: XLA compiles for the CPU here. Fusion, layouts and scheduling
differ on GPU/TPU, so the temporary (activation) memory is an estimate of
the right order rather than the accelerator's exact figure. Parameter and
optimizer bytes come from the shardings themselves and are exact. FLOPs
are XLA's count of the partitioned program (including the work that a
non-divisible or replicated part makes every device repeat).

The process needs at least data*fsdp*tensor CPU devices:
XLA_FLAGS=--xla_force_host_platform_device_count=N set before JAX starts its
CPU backend (`request_host_devices(n)` does it when that has not happened
yet; tools/simulate_mesh.py does it for you).
"""

import math
import os
from typing import Any, Mapping

import jax
import ml_collections

from flaxlm import config as config_lib
from flaxlm import models
from flaxlm import optimizer as optimizer_lib
from flaxlm import sharding
from flaxlm import train as train_lib
from flaxlm.errors import ConfigError

_FLAG = "--xla_force_host_platform_device_count"


def request_host_devices(n: int) -> None:
    """Asks for `n` fake CPU devices; works only before JAX's backends start (else checks there are n)."""
    from jax._src import xla_bridge

    if not xla_bridge.backends_are_initialized():
        flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(_FLAG)]
        os.environ["XLA_FLAGS"] = " ".join([*flags, f"{_FLAG}={n}"])
        return
    have = len(jax.devices("cpu"))
    if have < n:
        raise ConfigError(
            f"simulating this mesh needs {n} CPU devices but JAX already started with {have}; "
            f"set XLA_FLAGS={_FLAG}={n} before the process starts (or call "
            "flaxlm.simulate.request_host_devices before anything uses JAX)"
        )


def default_max_predictions(seq_len: int) -> int:
    """BERT's masked positions per sequence: 15% of seq_len up to a multiple of 4 (128: 20, 512: 80)."""
    return int(math.ceil(0.15 * seq_len / 4) * 4)


def simulate(
    model_config: Mapping[str, Any],
    mesh_shape: tuple[int, int, int],
    batch_size: int,
    seq_len: int,
    *,
    objective: str | None = None,
    max_predictions: int | None = None,
    grad_accum_steps: int = 1,
    rules=None,
) -> dict[str, Any]:
    """Compiles one train step for `mesh_shape` = (data, fsdp, tensor) fake devices; returns per-device data.

    model_config: the fields of config.model (e.g. `load_config("bert_large").model`), with `arch`.
    batch_size: global batch in sequences; seq_len: tokens per sequence.
    objective: default "clm" for arch "gpt", "mlm_nsp" for "bert". rules: default
    config.sharding.rules' default (flaxlm.sharding.DEFAULT_RULES).

    Returns a dict (bytes are per device, flops per device per step):
      mesh, devices, batch_size, seq_len, params (count),
      param_bytes, opt_state_bytes    exact, from the shardings;
      argument_bytes, output_bytes, alias_bytes, temp_bytes
                                      XLA's memory_analysis (temp: activations kept
                                      for the backward pass plus workspace);
      peak_bytes                      argument + output - alias + temp;
      flops, bytes_accessed           XLA's cost_analysis of the per-device program;
      model_flops                     6 * non-embedding params * tokens / devices (Kaplan et al.
                                      2020), the usual estimate: matmuls only, no attention
                                      scores, no vocabulary projection.
    Raises ConfigError for a mesh that does not fit the model (a dim not divisible) or
    when there are too few CPU devices.
    """
    data, fsdp, tensor = (int(x) for x in mesh_shape)
    n = data * fsdp * tensor
    devices = jax.devices("cpu")
    if len(devices) < n:
        request_host_devices(n)  # raises with what to do
    config = config_lib.base_config()
    config.model.update(dict(model_config))
    arch = config.model.arch
    config.objective = objective or ("clm" if arch == "gpt" else "mlm_nsp")
    config.data.builder = "causal" if arch == "gpt" else "segment_pair"
    config.data.seq_len = seq_len
    config.data.max_predictions = max_predictions or default_max_predictions(seq_len)
    config.train.update(batch_size=batch_size, grad_accum_steps=grad_accum_steps)
    config.mesh = ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor))
    if rules is not None:
        config.sharding.rules = tuple(rules)
    config_lib.validate(config)

    model = models.get_model(train_lib.model_config(config))
    tx = optimizer_lib.make_optimizer(config.train)
    schedule = optimizer_lib.learning_rate_schedule(config.train)
    runner = train_lib.Runner(config, model, tx, schedule, devices=devices[:n])
    rng = jax.random.key(0)
    state = runner.abstract_state(model, tx, rng)
    batch = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=runner.batch_sharding),
        train_lib.dummy_batch(config, batch_size),
    )
    compiled = runner.lower_train_step(state, batch, rng).compile()

    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older JAX: one dict per program
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    leaves = jax.tree_util.tree_leaves_with_path(state.params)
    non_embedding = sum(x.size for kp, x in leaves if "embeddings" not in sharding.path_str(kp))
    out = dict(
        mesh=f"{data}x{fsdp}x{tensor}",
        devices=n,
        batch_size=batch_size,
        seq_len=seq_len,
        params=int(num_params),
        param_bytes=sharding.bytes_per_device(state.params, runner.state_sharding.params),
        opt_state_bytes=sharding.bytes_per_device(state.opt_state, runner.state_sharding.opt_state),
        argument_bytes=int(mem.argument_size_in_bytes),
        output_bytes=int(mem.output_size_in_bytes),
        alias_bytes=int(mem.alias_size_in_bytes),
        temp_bytes=int(mem.temp_size_in_bytes),
        flops=float(cost.get("flops", float("nan"))),
        bytes_accessed=float(cost.get("bytes accessed", float("nan"))),
        model_flops=6.0 * non_embedding * batch_size * seq_len / n,
    )
    out["peak_bytes"] = out["argument_bytes"] + out["output_bytes"] - out["alias_bytes"] + out["temp_bytes"]
    return out
