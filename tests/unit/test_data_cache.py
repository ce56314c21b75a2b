"""Dataset cache (hit/miss on config or file change, atomic, built once under concurrency), the datamodule's
validation carve-out, and the data configs composing and instantiating."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from recsys.data import cache
from recsys.data.graph_datamodule import GraphDataModule
from recsys.data.sources import SplitFolderSource
from recsys.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    d = tmp_path / "split"
    d.mkdir(exist_ok=True)
    train = "\n".join(f"{u} " + " ".join(map(str, sorted(rng.choice(30, 8, replace=False)))) for u in range(20))
    test = "\n".join(f"{u} {30 + u % 5}" for u in range(20))
    (d / "train.txt").write_text(train + "\n")
    (d / "test.txt").write_text(test + "\n")
    return d


class Counting(SplitFolderSource):
    builds = 0

    def build(self):
        type(self).builds += 1
        return super().build()


def test_cache_hit_miss_on_config_and_file_change(tmp_path):
    d, cache_dir = folder(tmp_path), tmp_path / "processed"
    Counting.builds = 0
    first = cache.load_or_build(Counting(path=str(d), unseen_items="keep"), cache_dir)
    again = cache.load_or_build(Counting(path=str(d), unseen_items="keep"), cache_dir)
    assert Counting.builds == 1  # hit
    assert np.array_equal(first.train[1], again.train[1]) and list(first.user_ids) == list(again.user_ids)
    cache.load_or_build(Counting(path=str(d), unseen_items="drop"), cache_dir)
    assert Counting.builds == 2  # preprocessing config changed: miss
    cache.load_or_build(Counting(path=str(d), unseen_items="keep", min_user_interactions=2), cache_dir)
    assert Counting.builds == 3
    (d / "test.txt").write_text((d / "test.txt").read_text() + "0 1\n")  # the file changed: miss
    cache.load_or_build(Counting(path=str(d), unseen_items="keep"), cache_dir)
    assert Counting.builds == 4
    text = (d / "train.txt").read_bytes()
    (d / "train.txt").write_bytes(text)  # rewritten with the same bytes (new mtime): still a hit
    cache.load_or_build(Counting(path=str(d), unseen_items="keep"), cache_dir)
    assert Counting.builds == 4
    assert not [p for p in cache_dir.iterdir() if p.suffix == ".tmp"]  # nothing half-written


def test_concurrent_preparation_builds_once(tmp_path):
    d, cache_dir = folder(tmp_path), tmp_path / "processed"

    class Slow(SplitFolderSource):
        builds = 0

        def build(self):
            type(self).builds += 1
            time.sleep(0.3)
            return super().build()

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.load_or_build(Slow(path=str(d)), cache_dir)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Slow.builds == 1 and len(results) == 3


def test_datamodule_carves_validation_unless_validate_on_test(tmp_path):
    d = folder(tmp_path)
    dm = GraphDataModule(SplitFolderSource(path=str(d), unseen_items="keep"), cache_dir=str(tmp_path / "c"),
                         validate_fraction=0.25, validate_seed=1)
    dm.setup()
    s = dm.splits
    assert len(s.valid[0]) == 20 * 2 and len(s.train[0]) == 20 * 6  # round(0.25 * 8) per user
    assert "carved from train" in s.meta["validation"]
    paper = GraphDataModule(SplitFolderSource(path=str(d), unseen_items="keep"), cache_dir=str(tmp_path / "c"),
                            validate_fraction=0.25, validate_on_test=True)
    paper.setup()
    assert len(paper.splits.valid[0]) == 0 and len(paper.splits.train[0]) == 160
    train_pairs = set(zip(*paper.splits.train, strict=True))
    assert set(zip(*s.train, strict=True)) | set(zip(*s.valid, strict=True)) == train_pairs
    assert np.array_equal(paper.splits.test[1], s.test[1])
    with pytest.raises(ConfigError, match="data.validate_fraction=0.1"):
        GraphDataModule(SplitFolderSource(path=str(d)), validate_fraction=0.0).setup()


DATA_CONFIGS = ["gowalla", "yelp2018", "amazon_book", "lastfm", "ml_100k", "ml_1m", "ml_20m", "ml_latest_small",
                "csv_graph", "recbole_inter"]


def compose_data(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=[f"data={name}", *overrides])


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_data_configs_compose_and_instantiate_without_network(name, tmp_path):
    overrides = [f"paths.data_dir={tmp_path}"]
    if name in ("csv_graph", "recbole_inter"):
        overrides.append(f"data.path={tmp_path / 'x.csv'}")
    cfg = compose_data(name, *overrides)
    dm = instantiate(cfg.data, negative_sampler=None)
    assert isinstance(dm, GraphDataModule)
    assert dm.source.name == name
    assert dm.cache_dir == tmp_path / "processed"


def test_csv_graph_without_path_is_a_config_error(tmp_path):
    cfg = compose_data("csv_graph", f"paths.data_dir={tmp_path}")
    with pytest.raises(InstantiationException) as info:
        instantiate(cfg.data, negative_sampler=None)
    assert isinstance(info.value.__cause__, ConfigError) and "data.path" in str(info.value.__cause__)
