"""validate_config over composed configs: one test per rule, each message names the key and the value."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from recsys.builders import build_model
from recsys.data.session_datamodule import SessionDataModule
from recsys.errors import ConfigError
from recsys.validation import check_group_choices, validate_against_data, validate_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def compose_cfg(*overrides: str, name: str = "train") -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides), return_hydra_config=True)


def error_of(*overrides: str, task: str = "train") -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(compose_cfg(*overrides, name=task), task)
    return str(info.value)


@pytest.mark.parametrize("overrides", [
    [], ["model=ngcf"], ["model=mf"], ["model=pop"], ["model=gru4rec"], ["model=session_pop"], ["model=spop"],
    ["model=item_knn"], ["model=sasrec"], ["experiment=sasrec_rsc15"], ["experiment=sasrec_synthetic"],
    ["model=simgcl"], ["model=xsimgcl"], ["sampler=hard"], ["sampler=in_batch"], ["experiment=lightgcn_synthetic"],
    ["trainer.max_epochs=-1"], ["trainer.max_epochs=0"], ["model.topk=[2000]"],
    ["hparams_search=lightgcn_optuna"], ["hparams_search=ngcf_optuna"],  # search spaces are not settings
])
def test_shipped_configs_are_valid(overrides):
    validate_config(compose_cfg(*overrides), "train")


@pytest.mark.parametrize(("overrides", "needle"), [
    (["model.optimizer.lr=-1"], "model.optimizer.lr=-1"),
    (["model.optimizer.lr=0"], "model.optimizer.lr=0"),
    (["model=gru4rec", "model/optimizer=adam", "model.optimizer.lr=-0.5"], "model.optimizer.lr=-0.5"),
    (["trainer.max_epochs=-5"], "trainer.max_epochs=-5"),
    (["trainer.min_epochs=-1"], "trainer.min_epochs=-1"),
    (["trainer.check_val_every_n_epoch=0"], "trainer.check_val_every_n_epoch=0"),
    (["data.batch_size=0"], "data.batch_size=0"),
    (["data.eval_batch_size=-3"], "data.eval_batch_size=-3"),
    (["model.topk=[10,0]"], "model.topk=[10,0]"),
    (["model.topk=[]"], "model.topk=[]"),
    (["model.topk=[2.5]"], "model.topk=[2.5]"),
    (["model.embedding_dim=0"], "model.embedding_dim=0"),
    (["model.num_layers=-1"], "model.num_layers=-1"),
    (["model=ngcf", "model.layer_sizes=[64,0]"], "model.layer_sizes=[64,0]"),
    (["model=gru4rec", "model.layers=[0]"], "model.layers=[0]"),
    (["model.edge_dropout=1.0"], "model.edge_dropout=1.0"),
    (["model=ngcf", "model.node_dropout=-0.1"], "model.node_dropout=-0.1"),
    (["model=ngcf", "model.message_dropout=[0.1,1.5]"], "model.message_dropout=[0.1,1.5]"),
    (["model=gru4rec", "model.dropout_hidden=1"], "model.dropout_hidden=1"),
    (["model=sasrec", "model.max_len=0"], "model.max_len=0"),
    (["model=sasrec", "model.num_heads=0"], "model.num_heads=0"),
    (["model=sasrec", "model.num_blocks=-1"], "model.num_blocks=-1"),
    (["model=sasrec", "model.dropout=1.0"], "model.dropout=1.0"),
    (["model.reg_weight=-1"], "model.reg_weight=-1"),
    (["model=simgcl", "model.cl_weight=-0.5"], "model.cl_weight=-0.5"),
    (["model=simgcl", "model.eps=-0.1"], "model.eps=-0.1"),
    (["model=simgcl", "model.temperature=0"], "model.temperature=0"),
    (["model=xsimgcl", "model.cross_layer=0"], "model.cross_layer=0"),
    (["sampler.num_negatives=0"], "sampler.num_negatives=0"),
    (["sampler=hard", "sampler.candidates=0"], "sampler.candidates=0"),
    (["sampler.n_sample=-2"], "sampler.n_sample=-2"),
    (["data.steps_per_chunk=0"], "data.steps_per_chunk=0"),
    (["data.steps_per_chunk=fast"], "data.steps_per_chunk=fast"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1"),
    (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0"),
    (["trainer.gradient_clip_algorithm=max"], "trainer.gradient_clip_algorithm=max"),
])
def test_each_rule_names_key_and_value(overrides, needle):
    message = error_of(*overrides)
    assert message.startswith(needle + ":") and "must be" in message, message


def test_topk_above_the_synthetic_number_of_items():
    message = error_of("model.topk=[10,100000]", "data.source.num_items=500")
    assert "model.topk=[10,100000]" in message and "K=100000" in message and "500 items" in message


def test_topk_above_the_loaded_number_of_items():
    cfg = compose_cfg("model.topk=[10,50]")
    validate_against_data(cfg, SimpleNamespace(info=SimpleNamespace(num_items=50)))  # K = 50 items: fine
    with pytest.raises(ConfigError, match=r"model.topk=\[10,50\].*49 items"):
        validate_against_data(cfg, SimpleNamespace(info=SimpleNamespace(num_items=49)))


@pytest.mark.parametrize(("overrides", "needle"), [
    (["model=pop", "data=synthetic_sessions"], "model=session_pop"),
    (["model=gru4rec", "data=synthetic_graph"], "model=lightgcn"),
    (["model=session_pop", "data=synthetic_graph"], "model=pop"),
    (["model=lightgcn", "data=synthetic_sessions"], "model=gru4rec"),
    (["model=sasrec", "data=synthetic_graph"], "model=lightgcn"),
])
def test_model_on_the_wrong_data_kind_names_the_matching_model(overrides, needle):
    message = error_of(*overrides)
    model, data = overrides
    assert message.startswith(f"{model} needs") and f"but {data} is" in message and needle in message, message


def test_build_model_checks_the_kind_with_the_config_check(monkeypatch):
    """A config that skipped validate_config (a run's stored config) meets the same check, on the built DataModule."""
    cfg = compose_cfg("model=pop", "data=synthetic_sessions")
    with pytest.raises(ConfigError) as info:
        build_model(cfg, SessionDataModule.__new__(SessionDataModule))
    assert str(info.value) == error_of("model=pop", "data=synthetic_sessions")


@pytest.mark.parametrize(("overrides", "needle"), [
    (["model=sasrec", "data.train_batches=session_parallel"],
     "data.train_batches=session_parallel: model=sasrec trains on data.train_batches=sequences"),
    (["model=gru4rec", "+data.train_batches=sequences"],
     "data.train_batches=sequences: model=gru4rec trains on data.train_batches=session_parallel"),
])
def test_a_session_model_gets_its_kind_of_training_batches(overrides, needle):
    assert error_of(*overrides).startswith(needle)


def test_gpus_without_gpu_fails_in_validation():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    assert "trainer.gpus=2" in error_of("trainer.gpus=2")
    assert "trainer.gpus=1" in error_of("trainer.gpus=1", "ckpt_path=x.ckpt", task="eval")


def test_recommend_k_must_be_positive():
    assert error_of("ckpt_path=x", "k=0", task="recommend").startswith("k=0:")


@pytest.mark.parametrize("argv", [
    ["sampler=hard"], ["-m", "sampler=uniform,hard", "model=lightgcn,ngcf"], ["model/optimizer=adam"],
    ["experiment=lightgcn_synthetic"], ["+experiment=whatever"], ["~callbacks.progress_bar"],
    ["hydra/launcher=submitit_slurm"], ["--cfg", "job"], ["--help"], ["experiment=null"],
    ["data.path=/x"], ["seed=3"], ["-m", "sampler=choice(uniform,hard)"],
])
def test_known_or_unchecked_choices_pass(argv):
    check_group_choices(argv, CONFIGS)


@pytest.mark.parametrize(("argv", "needle"), [
    (["sampler=nosuch"], "sampler=nosuch: unknown choice; valid: gru4rec, hard, in_batch, popularity, uniform"),
    (["-m", "model=lightgcn,nosuch"], "model=nosuch: unknown choice"),
    (["model/optimizer=sgd"], "model/optimizer=sgd: unknown choice; valid: adagrad, adam"),
    (["experiment=nope"], "experiment=nope: unknown choice"),
])
def test_unknown_choices_are_named_with_the_valid_ones(argv, needle):
    with pytest.raises(ConfigError) as info:
        check_group_choices(argv, CONFIGS)
    assert needle in str(info.value)


def test_the_session_sampler_on_graph_data_is_refused_before_any_work():
    message = error_of("sampler=gru4rec")
    assert message.startswith("sampler=gru4rec draws negatives for session data") and "data=synthetic_graph" in message
    assert "sampler=uniform, popularity, in_batch, hard" in message
    validate_config(compose_cfg("model=gru4rec", "sampler=gru4rec"), "train")  # its own data: fine
