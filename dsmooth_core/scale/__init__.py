"""Scale out: certify on a Ray cluster (optional ``ray``: the ``[scale]`` extra, or ``requirements-scale.txt``).

The driver plans the run and writes every record itself; Ray workers only compute them, chunk by
chunk, so the record files, resuming and sharding are those of the in-process engine.
"""

from dsmooth_core.scale.cluster import ClusterUnavailableError, RayOptions, connect, worker_device
from dsmooth_core.scale.experiment import run_experiment_on_ray

__all__ = ["ClusterUnavailableError", "RayOptions", "connect", "run_experiment_on_ray", "worker_device"]
