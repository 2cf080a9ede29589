"""The learner's parts, each without Ray: DeepSpeed engines, token batches and their log-probs,
a rank's share of each step, checkpoints, the replay buffer. actors/learner_worker.py puts them
together into the worker the learner group runs."""
