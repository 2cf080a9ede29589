"""LearnerGroup: resources.learner_workers actors of one worker class, one data-parallel group.

The ranks sit in one placement group (a bundle per rank, packed onto as few nodes as fit) and
form one torch.distributed group: gloo on CPU, NCCL on GPU, with rank 0's address and port
picked inside rank 0's bundle (a port taken before the group binds it means a retry). The
driver reads one line per step: `run(method, *args)` calls every rank with the same arguments,
in the same order on every rank (the ranks meet in collectives, so order matters), waits for
all of them and returns rank 0's result; each rank trains on its share of every minibatch
(actors/learner_worker.py). A rank that fails ends the call at once with an error naming it.

The group hosts any worker class whose constructor takes, after the caller's arguments, the
keywords `progress` (the ProgressBoard, rank 0 only), `rank`, `world_size` and `address` (rank
0's rendezvous, cluster/rendezvous.py).
"""

from __future__ import annotations

import ray
from ray.exceptions import RayActorError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from cluster.calls import CallFailed, CallTimedOut, failure_cause, wait_all, wait_with_progress
from cluster.rendezvous import free_address

RENDEZVOUS_ATTEMPTS = 3


class LearnerGroupError(RuntimeError):
    pass


class LearnerGroup:
    def __init__(self, config, worker_class: type, worker_args: tuple, env: dict[str, str], board=None):
        """worker_args: worker_class's own positional arguments; board: the ProgressBoard rank 0
        posts its steps to."""
        res = config.resources
        self.size = res.learner_workers
        self.board = board
        self.timeout_s, self.start_timeout_s = res.learner_timeout_s, res.worker_start_timeout_s
        bundle = {"CPU": res.learner_cpus, **({"GPU": res.learner_gpus} if res.learner_gpus else {})}
        self.placement = placement_group([dict(bundle) for _ in range(self.size)], strategy="PACK")
        ray.get(self.placement.ready())
        remote_class = ray.remote(worker_class)
        for attempt in range(1, RENDEZVOUS_ATTEMPTS + 1):
            address = None
            if self.size > 1:
                address = ray.get(ray.remote(free_address).options(
                    num_cpus=0, scheduling_strategy=self._in_bundle(0)).remote())
            self.ranks = [
                remote_class.options(num_cpus=res.learner_cpus, num_gpus=res.learner_gpus,
                                     runtime_env={"env_vars": env}, scheduling_strategy=self._in_bundle(rank))
                .remote(*worker_args, progress=board if rank == 0 else None, rank=rank,
                        world_size=self.size, address=address)
                for rank in range(self.size)
            ]
            try:
                self.nodes = self._wait([rank.ready.remote() for rank in self.ranks], call="ready",
                                        timeout_s=self.start_timeout_s)  # node id per rank
                return
            except LearnerGroupError as error:
                retry = attempt < RENDEZVOUS_ATTEMPTS and "address already in use" in str(error).lower()
                self.shutdown(keep_placement=retry)
                if not retry:
                    raise
                print(f"[crowdless] learner group: port {address[1]} was taken, retrying", flush=True)

    def _in_bundle(self, index: int) -> PlacementGroupSchedulingStrategy:
        return PlacementGroupSchedulingStrategy(placement_group=self.placement,
                                                placement_group_bundle_index=index)

    def _wait(self, refs: list, progress: tuple | None = None, call: str = "", timeout_s: float | None = None) -> list:
        timeout_s = timeout_s or self.timeout_s
        try:
            if progress is None:
                return wait_all(refs, timeout_s=timeout_s)
            return wait_with_progress(refs, self.board, *progress, timeout_s=timeout_s)
        except CallTimedOut as late:
            raise LearnerGroupError(
                f"learner call {call or '?'} on rank {', '.join(map(str, late.indices))} of {self.size} did not "
                f"finish within {late.seconds:g}s (resources.learner_timeout_s); --resume continues from the "
                "last checkpoint") from None
        except CallFailed as failed:
            errors = self._failures(refs, {failed.index: failed.__cause__})
            # A rank that died makes its peers' collectives fail too, often first: name the dead one.
            died = [rank for rank, error in errors.items() if isinstance(error, RayActorError)]
            rank = died[0] if died else failed.index
            others = sorted(set(errors) - {rank})
            raise LearnerGroupError(
                f"learner rank {rank} of {self.size} failed: {failure_cause(errors[rank])}"
                + (f" (rank {', '.join(map(str, others))} stopped with it)" if others else "")) from errors[rank]

    @staticmethod
    def _failures(refs: list, errors: dict, seconds: float = 5.0) -> dict:
        """The errors of every call that fails within `seconds` of the first failure."""
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=seconds)
        for rank, ref in enumerate(refs):
            if ref in ready and rank not in errors:
                try:
                    ray.get(ref)
                except Exception as error:
                    errors[rank] = error
        return errors

    def run(self, method: str, *args, progress: tuple[str, int, str] | None = None):
        """Every rank's `method(*args)`; rank 0's result. progress: (phase, iteration, unit) draws
        the phase's bar from rank 0's posts to the board."""
        return self._wait([getattr(rank, method).remote(*args) for rank in self.ranks], progress, call=method)[0]

    def policy_state_ref(self) -> ray.ObjectRef:
        """The policy's weights, gathered on rank 0, as an object ref the rollout workers read
        straight from the object store (the driver never holds them)."""
        refs = [rank.portable_policy_state.remote() for rank in self.ranks]
        self._wait(refs[1:], call="portable_policy_state")  # the other ranks return None once they took part
        if not ray.wait(refs[:1], timeout=self.timeout_s)[0]:
            raise LearnerGroupError(f"learner call portable_policy_state on rank 0 did not finish within "
                                    f"{self.timeout_s:g}s (resources.learner_timeout_s)")
        return refs[0]

    def shutdown(self, keep_placement: bool = False) -> None:
        for rank in getattr(self, "ranks", []):
            ray.kill(rank)
        self.ranks = []
        if not keep_placement:
            remove_placement_group(self.placement)
