import pytest

from configs.schema import CONFIG_DIR, ConfigError, CrowdlessConfig, Section, dump_config, load_config

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["default", "tiny", "paper", "gpu"])
def test_packaged_configs_load(name):
    config = load_config(CONFIG_DIR / f"{name}.yaml")
    assert isinstance(config, CrowdlessConfig)
    assert load_config(name) == config  # bare names resolve to packaged files


def test_paper_settings():
    config = load_config("paper")
    assert (config.rollout.temperature, config.rollout.top_p, config.rollout.max_new_tokens) == (0.8, 0.95, 100)
    assert (config.policy.kl_coef, config.policy.lr, config.policy.minibatch_size) == (0.5, 3e-5, 16)
    assert config.ranking.isodata.max_std == 0.05


def test_overrides_are_typed_yaml_values():
    config = load_config("tiny", ["policy.kl_coef=0.25", "ranking.isodata.k_init=3", "data.max_prompts=null",
                                  "ranking.noise_kinds=[ngram]", "run.dir=/tmp/x"])
    assert config.policy.kl_coef == 0.25 and config.ranking.isodata.k_init == 3
    assert config.data.max_prompts is None and config.ranking.noise_kinds == ["ngram"]
    assert config.run.dir == "/tmp/x"


def test_unknown_key_names_full_path(tmp_path):
    with pytest.raises(ConfigError, match=r"ranking\.isodata\.k_start: unknown key"):
        load_config("tiny", ["ranking.isodata.k_start=3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("ppo:\n  klcoef: 0.1\n")
    with pytest.raises(ConfigError, match=rf"{bad}.*\n  ppo\.klcoef: unknown key"):
        load_config(bad)


def test_keys_moved_from_ppo_to_policy_are_refused_with_their_new_name(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("ppo:\n  lr: 1.0e-5\n  value_lr: 1.0e-5\n")
    with pytest.raises(ConfigError, match=rf"{old}.*\n  ppo\.lr is now policy\.lr") as refused:
        load_config(old)
    assert "value_lr" not in str(refused.value)  # still a ppo key
    with pytest.raises(ConfigError, match=r"ppo\.kl_coef is now policy\.kl_coef"):
        load_config("tiny", ["ppo.kl_coef=0.1"])
    assert load_config("tiny", ["ppo.value_lr=0.1", "policy.kl_coef=0.2"]).ppo.value_lr == 0.1


def test_wrong_type_names_path_and_value():
    with pytest.raises(ConfigError, match=r"policy\.kl_coef: Input should be a valid number.*got 'lots'"):
        load_config(None, ["policy.kl_coef=lots"])
    with pytest.raises(ConfigError, match=r"rollout\.backend: Input should be 'vllm' or 'transformers'"):
        load_config(None, ["rollout.backend=tgi"])
    with pytest.raises(ConfigError, match=r"rollout\.top_p: Input should be less than or equal to 1"):
        load_config(None, ["rollout.top_p=1.5"])


def test_cross_field_check():
    with pytest.raises(ConfigError, match="policy.minibatch_size"):
        load_config("tiny", ["policy.minibatch_size=1000"])


def test_zero_stage_auto_shards_only_across_several_learner_ranks():
    assert load_config("tiny").learner.zero_stage == 0  # one rank: nothing to shard
    assert load_config("tiny", ["resources.learner_workers=2"]).learner.zero_stage == 2
    assert load_config("tiny", ["learner.zero_stage=3"]).learner.zero_stage == 3  # an explicit stage stays
    with pytest.raises(ConfigError, match=r"learner\.zero_stage"):
        load_config("tiny", ["learner.zero_stage=4"])


def test_malformed_overrides_and_files(tmp_path):
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["policy.kl_coef"])
    with pytest.raises(ConfigError, match=r"run\.dir is not a section"):
        load_config("tiny", ["run.dir.x=1"])
    with pytest.raises(ConfigError, match=r"run\.seed: Input should be a valid integer"):
        load_config(None, ["run.seed.x=1"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("run: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_dump_round_trips(tmp_path):
    config = load_config("paper", ["run.seed=5"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


def test_every_field_is_documented():
    def walk(model):
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, Section):
                yield from walk(annotation)
            else:
                yield name, field

    undocumented = [name for name, field in walk(CrowdlessConfig) if not field.description]
    assert undocumented == []


@pytest.mark.parametrize("key", ["nll_coef", "forward_kl_coef", "length_coef"])
def test_the_preference_anchors_are_refused_for_a_policy_gradient_objective(key):
    assert getattr(load_config("tiny", ["policy.objective=dpo", f"policy.{key}=0.5"]).policy, key) == 0.5
    with pytest.raises(ConfigError, match=rf"policy.{key} applies to dpo and listwise only, not to "
                                          r"policy.objective 'grpo'"):
        load_config("tiny", ["policy.objective=grpo", f"policy.{key}=0.5"])


def test_policy_objective_is_checked_against_the_registry():
    from algos import objectives
    from configs.schema import load_config

    for name in objectives.OBJECTIVES:
        assert load_config("tiny", [f"policy.objective={name}"]).policy.objective == name
    with pytest.raises(ConfigError, match=r"policy\.objective: .*unknown objective 'a2c'; registered: dpo, grpo"):
        load_config("tiny", ["policy.objective=a2c"])
    # one register call is all a new objective needs: the config accepts it at once
    added = objectives.register_objective(objectives.Objective("a2c", "policy_gradient",
                                                               objectives.clipped_policy_loss,
                                                               objectives.rloo_advantages))
    try:
        assert load_config("tiny", ["policy.objective=a2c"]).policy.objective == "a2c"
    finally:
        del objectives.OBJECTIVES[added.name]


def test_the_api_key_is_a_secret_never_written_out(tmp_path):
    from configs.schema import dump_config, load_config

    config = load_config("tiny", ["serve.api_key=sekrit-123"])
    assert config.serve.api_key.get_secret_value() == "sekrit-123"
    assert "sekrit-123" not in repr(config) and "sekrit-123" not in str(config.model_dump())
    text = dump_config(config)
    assert "sekrit-123" not in text and "api_key: '***'" in text
    (tmp_path / "config.yaml").write_text(text)
    assert load_config(tmp_path / "config.yaml").serve.api_key is None  # the recorded '***' is no key


@pytest.mark.parametrize("objective,source,trains,scorer", [
    ("ppo", "reward_model", True, "reward_model"), ("grpo", "ranker", False, None),
    ("dpo", "reward_model", False, "implicit_reward"), ("listwise", "ranker", False, "implicit_reward")])
def test_the_config_says_which_reward_model_and_scorer_a_run_has(objective, source, trains, scorer):
    """The driver, the learner and the Serve app read these from the config, never from objective names."""
    config = load_config("tiny", [f"policy.objective={objective}", f"reward.source={source}"])
    assert config.trains_reward_model is trains and config.reward_scorer == scorer
