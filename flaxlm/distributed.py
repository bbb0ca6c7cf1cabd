"""Joining JAX's multi-controller runtime (`jax.distributed`) when a run spans several processes.

Every process runs the same `flaxlm train` command; `initialize` (called by
the CLI before anything touches a device) connects them, after which
`jax.devices()` lists the devices of all hosts and one jitted train step
spans them all. How the processes find each other:

- explicit flags: --coordinator_address=HOST:PORT (process 0's address and
  a free port), --num_processes=N, --process_id=I (0..N-1, 0 on HOST);
- otherwise JAX's own cluster detection, which reads what the launcher
  set: a Cloud TPU VM slice (its metadata server), SLURM (`srun`: SLURM_*
  variables) or Open MPI (`mpirun`: OMPI_* variables). flaxlm joins only
  when the detected cluster has more than one process, so a plain
  single-process run (or a `salloc` shell, or one TPU VM host) never
  starts a coordinator.
"""

import logging
import os

import jax

from flaxlm.errors import FlaxlmError

log = logging.getLogger(__name__)


class ClusterError(FlaxlmError):
    """Processes that cannot form one run: inconsistent flags or an unreachable coordinator."""


def detect_cluster() -> tuple[str, int] | None:
    """(name, process count) of the cluster launcher that started this process, or None.

    Asks the same detectors `jax.distributed.initialize()` uses (TPU VM,
    SLURM, Open MPI, Kubernetes with its package), in the same order, and
    skips the opt-in ones (mpi4py). They are a private JAX module: if it
    moves, auto-detection is off and the explicit flags still work.
    """
    try:
        from jax._src import clusters
    except ImportError:  # pragma: no cover - depends on the JAX version
        log.warning("jax._src.clusters is gone: no cluster auto-detection; pass --num_processes etc.")
        return None
    for env in clusters.ClusterEnv._cluster_types:
        if getattr(env, "opt_in_only_method", False):
            continue
        try:
            if not env.is_env_present():
                continue
            return env.name or env.__name__, int(env.get_process_count())
        except Exception as e:  # noqa: BLE001 - a half-configured launcher: say so, treat as absent
            log.warning("cluster detection %s failed (%s); treating this as a single process", env, e)
            return None
    return None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Joins jax.distributed if this is one of several processes; returns whether it did.

    Must run before any JAX computation or device query. With no argument,
    joins only when a detected cluster has more than one process. With
    arguments, they are passed to `jax.distributed.initialize` (which
    fills in any left out from a detected cluster); num_processes=1 means
    a single process and does nothing.
    """
    if jax.distributed.is_initialized():
        return True
    explicit = (coordinator_address, num_processes, process_id) != (None, None, None)
    if explicit:
        if num_processes == 1:
            return False
        if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
            raise ClusterError(
                f"--process_id={process_id} is not in 0..{num_processes - 1} "
                f"(--num_processes={num_processes}); give each process a distinct id below --num_processes"
            )
        detected = detect_cluster()
        if (num_processes is None or process_id is None or coordinator_address is None) and detected is None:
            raise ClusterError(
                "multi-process runs outside SLURM, Open MPI or a TPU VM need all of --coordinator_address, "
                "--num_processes and --process_id"
            )
        what = f"process {process_id} of {num_processes} (coordinator {coordinator_address})"
    else:
        detected = detect_cluster()
        if detected is None or detected[1] <= 1:
            return False
        what = f"a {detected[0]} cluster of {detected[1]} processes"
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
        )
    except (RuntimeError, ValueError) as e:  # XlaRuntimeError is a RuntimeError
        raise ClusterError(
            f"cannot join jax.distributed as {what}: {' '.join(str(e).split())[:300]}; check that every "
            "process got the same --coordinator_address and --num_processes, that process 0 is running "
            "and that its port is reachable from the others"
        ) from e
    if jax.process_index() > 0:  # one log for the run: the other processes report only problems
        logging.getLogger("flaxlm").setLevel(logging.WARNING)
    log.info(
        "jax.distributed: process %d of %d, %d local / %d global devices (pid %d)",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        os.getpid(),
    )
    return True
