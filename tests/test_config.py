"""Config validation names the key to fix; the real conf/ composes and reproduces the tutorial."""
import dataclasses

import pytest

from mfexp.config import Config, flatten, validate
from mfexp.errors import ConfigError

BAD = [("model", "k", 0), ("model", "hidden", -1), ("model", "dropout", 1.0), ("model", "dropout", -0.1),
       ("model", "name", "svd"), ("train", "lr", 0.0), ("train", "batch_size", 0), ("train", "epochs", 0),
       ("train", "optimizer", "sgdd"), ("train", "device", "tpu"), ("data", "val_fraction", 1.0),
       ("data", "split", "u6")]


@pytest.mark.parametrize("group,key,value", BAD)
def test_bad_values_name_their_key(group, key, value):
    cfg = Config()
    setattr(getattr(cfg, group), key, value)
    with pytest.raises(ConfigError, match=rf"{group}\.{key}"):
        validate(cfg)


def test_defaults_are_the_tutorials(cfg):
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.momentum, cfg.train.wd) == ("sgd", 0.05, 0.9, 1e-4)
    assert (cfg.model.name, cfg.model.k, cfg.data.split) == ("plain", 64, "u1")
    assert cfg.train.init_scale == 0.01
    validate(cfg)


def test_flatten_gives_dotted_keys():
    flat = flatten(Config())
    assert flat["model.k"] == 64 and flat["train.lr"] == 0.05 and flat["data.split"] == "u1"
    assert all("." in k for k in flat)
    groups = [getattr(Config(), f.name) for f in dataclasses.fields(Config)]
    assert len(flat) == sum(len(dataclasses.fields(g)) for g in groups)


def test_misspelt_key_fails_at_composition():
    from hydra import compose, initialize_config_dir

    from mfexp import cli

    cli.register_schema()
    with initialize_config_dir(config_dir=cli.CONF_DIR, version_base="1.3"):
        with pytest.raises(Exception, match="kk"):
            compose(config_name="config", overrides=["model.kk=3"])
        with pytest.raises(Exception, match="wrongmodel"):
            compose(config_name="config", overrides=["model=wrongmodel"])
