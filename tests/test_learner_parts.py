"""The learner's parts that need no model: a rank's share of a step, token batches, the replay buffer."""

import pytest
import torch

from algos.pairs import PreferencePair
from crowdless.learner.ranks import RankShare
from crowdless.learner.replay import REPLAY_KEEP, load_replay, remember, save_replay
from crowdless.learner.tokens import batch_rows, chunks, token_batch
from crowdless.data.records import Rollout

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("items, world", [(7, 3), (2, 3), (8, 2), (5, 1)])
def test_rank_shares_cover_the_minibatch_once_and_their_weights_average_to_one(items, world):
    minibatch = list(range(items))
    shares = [RankShare(rank, world).share(minibatch) for rank in range(world)]
    real = [share for share, is_real in shares if is_real]
    assert [item for share in real for item in share] == minibatch  # contiguous, in order, each once
    assert all(share == minibatch[:1] for share, is_real in shares if not is_real)  # a dummy step
    losses = torch.arange(1.0, items + 1) ** 2  # one loss per unit of the minibatch
    weighted = []
    for rank, (share, is_real) in enumerate(shares):
        weight = RankShare(rank, world).loss_weight(len(share), items, is_real)
        weighted.append(weight * losses[share].mean())
    # DeepSpeed averages the ranks' gradients: the ranks' weighted mean losses, averaged, are the
    # minibatch's mean loss, so N ranks take the step one rank takes
    assert (sum(weighted) / world).item() == pytest.approx(losses.mean().item())


def _rollout(prompt_ids, response_ids):
    return Rollout("p", prompt_ids, response_ids, "", [], True)


def test_token_batch_marks_each_response_token_where_its_log_prob_sits():
    batch = token_batch([_rollout([1, 2, 3], [4, 5]), _rollout([1], [6, 7, 8])], pad_id=0)
    assert batch["ids"].tolist() == [[1, 2, 3, 4, 5], [1, 6, 7, 8, 0]]
    assert batch["mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    # the log-prob of response token t of a row is the next-token prediction at position start + t
    assert batch["index"].tolist()[0][:2] == [2, 3] and batch["index"].tolist()[1] == [0, 1, 2]
    ids, attention, index = batch_rows(batch, torch.tensor([0]))
    assert ids.tolist() == [[1, 2, 3, 4, 5]] and attention.sum().item() == 5
    assert [part.tolist() for part in chunks(5, 2)] == [[0, 1], [2, 3], [4]]


def test_the_replay_buffer_keeps_the_newest_pairs_and_round_trips(tmp_path):
    pairs = [PreferencePair(f"q{i}", "good", "bad", 0, 1, noised=i % 2 == 0) for i in range(REPLAY_KEEP + 5)]
    kept = remember(pairs[:10], pairs[10:])
    assert len(kept) == REPLAY_KEEP and kept[-1] == pairs[-1] and kept[0] == pairs[5]
    save_replay(kept[:3], tmp_path / "replay.jsonl")
    assert load_replay(tmp_path / "replay.jsonl") == kept[:3]
    assert load_replay(tmp_path / "missing.jsonl") == []


class _RecordingEngine:
    """Stands in for a DeepSpeed engine: records the losses it is asked to backward and its steps."""

    def __init__(self):
        self.backwards, self.steps = [], 0

    def backward(self, loss):
        self.backwards.append(float(loss))

    def step(self):
        self.steps += 1


def test_train_steps_weights_each_loss_and_metric_by_the_ranks_share():
    from crowdless.learner.steps import StepLosses, train_steps

    policy, critic = _RecordingEngine(), _RecordingEngine()
    steps = [[0, 1, 2], [3, 4]]
    units = [1.0, 2.0, 3.0, 4.0, 5.0]  # e.g. response tokens of each row
    reported = []

    def step(share, whole, real):
        mine, everything = sum(units[i] for i in share), sum(units[i] for i in whole)
        return StepLosses([(policy, torch.tensor(2.0)), (critic, torch.tensor(4.0))],
                          {"loss": float(len(share))}, mine, everything)

    # one rank: every loss backwards as it is, metrics are plain per-step means
    metrics = train_steps(steps, RankShare(0, 1), step, torch.device("cpu"), lambda d, t: reported.append((d, t)))
    assert policy.backwards == [2.0, 2.0] and critic.backwards == [4.0, 4.0] and policy.steps == critic.steps == 2
    assert metrics == {"loss": pytest.approx((3 + 2) / 2)} and reported == [(1, 2), (2, 2)]
    # rank 1 of 2 takes rows [2] and [4]: its loss is scaled by 2 x its share of the step's units
    policy.backwards.clear()

    def share_step(share, whole, real):
        return StepLosses([(policy, torch.tensor(1.0))], {}, sum(units[i] for i in share), sum(units[i] for i in whole))

    rank = RankShare(1, 2)
    rank.merged_means = lambda sums, n: sums  # no process group here: the sum over ranks is the identity
    train_steps(steps, rank, share_step, torch.device("cpu"), lambda d, t: None)
    assert policy.backwards == [pytest.approx(2 * 3 / 6), pytest.approx(2 * 5 / 9)]


def test_preference_items_and_their_padded_index():
    from crowdless.learner.preference import padded_lists, preference_items
    from crowdless.data.records import RankedGroup

    pair = PreferencePair("q", "good", "bad", 0, 1)
    group = RankedGroup("q", ["a", "b", "c"], [0.5, 0.3, 0.2], [0, 1, 2], [2, 0, 1], [pair])
    assert preference_items([group], "pairs") == [[("q", "good"), ("q", "bad")]]
    lists = preference_items([group], "lists")
    assert lists == [[("q", "c"), ("q", "a"), ("q", "b")]]
    index, valid = padded_lists([lists[0], lists[0][:2]])
    # the short list repeats its last row, masked out; rows are laid end to end
    assert index.tolist() == [[0, 1, 2], [3, 4, 4]] and valid.tolist() == [[True] * 3, [True, True, False]]
