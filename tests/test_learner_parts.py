"""The learner's parts that need no model: a rank's share of a step, token batches, the replay buffer."""

import pytest
import torch

from algos.pairs import PreferencePair
from crowdless.learner.ranks import RankShare
from crowdless.learner.replay import REPLAY_KEEP, load_replay, remember, save_replay
from crowdless.learner.tokens import batch_rows, chunks, token_batch
from crowdless.records import Rollout

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
