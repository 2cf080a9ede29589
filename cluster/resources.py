"""Whether a run's workers fit a Ray cluster, checked before any is started."""

from __future__ import annotations

from configs.schema import ConfigError, CrowdlessConfig


def check_resources(config: CrowdlessConfig, available: dict) -> None:
    """Fail now, naming the keys, rather than wait forever for workers Ray cannot place."""
    res = config.resources
    needs = {
        "CPU": res.learner_cpus * res.learner_workers + res.rollout_cpus * config.rollout.num_workers
        + res.ranker_cpus * config.ranking.num_workers + config.serve.enabled * config.serve.replica_cpus,
        "GPU": res.learner_gpus * res.learner_workers + res.rollout_gpus * config.rollout.num_workers
        + config.serve.enabled * config.serve.replica_gpus,
    }
    for kind, needed in needs.items():
        if needed > available.get(kind, 0) + 1e-9:
            raise ConfigError(
                f"the workers need {needed:g} {kind}s but the Ray cluster has {available.get(kind, 0):g}: "
                f"lower resources.learner_{kind.lower()}s / rollout_{kind.lower()}s / ranker_cpus, "
                "serve.replica_cpus / replica_gpus, or rollout.num_workers / ranking.num_workers")
