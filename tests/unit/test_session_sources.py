"""Session readers on small fixture files (formats, bad input with file/line), and the real shared samples.

Tests on ``../shared/datasets`` are skipped only when the folder is absent; with ``CI=true`` its absence fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from recsys.data.session_preprocess import DAY
from recsys.data.sources.columns import Column, read_columns
from recsys.data.sources.session_files import (
    CsvSessionSource,
    DigineticaSource,
    PreparedSessionSource,
    YoochooseClicksSource,
)
from recsys.data.sources.session_synthetic import SyntheticSessionSource, generate_synthetic_sessions
from recsys.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"
NO_FILTER = {"min_item_support": 1, "valid_days": 0}


def shared(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{path} is missing; CI must run the shared-data tests")
        pytest.skip(f"{path} not present")
    return path


def sequences(splits, split: str) -> list[list[str]]:
    s = splits.split(split)
    return [[str(splits.item_ids[i]) for i in seq] for seq in np.split(s.items, s.offsets)[1:-1]]


def write_prepared(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tr.txt").write_text(
        "SessionId\tItemId\tTime\n1\t100\t10.5\n1\t200\t11.0\n2\t200\t20.0\n2\t300\t19.0\n2\t100\t21.0\n"
    )
    (folder / "te.txt").write_text("SessionId\tItemId\tTime\n1\t300\t99.0\n1\t999\t100.0\n1\t100\t101.0\n5\t999\t1\n5\t100\t2\n")


def test_prepared_tsv_split_ids_from_train(tmp_path):
    write_prepared(tmp_path)
    splits = PreparedSessionSource(path=str(tmp_path), train="tr.txt", test="te.txt").build()
    assert splits.num_items == 3
    assert sequences(splits, "train") == [["100", "200"], ["300", "200", "100"]]  # sorted by time in session
    assert sequences(splits, "test") == [["300", "100"]]  # unseen 999 dropped; session 5 left too short
    assert splits.valid.num_sessions == 0
    # the test session id 1 is not confused with the train session id 1
    assert splits.test.session_ids.tolist() == ["1"]


def test_prepared_tsv_bad_input_names_file_and_line(tmp_path):
    write_prepared(tmp_path)
    (tmp_path / "bad.txt").write_text("SessionId\tItemId\tTime\n1\t100\t10\n\n1\tabc\t11\n")
    with pytest.raises(DataError, match=r"bad\.txt, line 4: item column 'ItemId' has the non-integer value 'abc'"):
        PreparedSessionSource(path=str(tmp_path), train="bad.txt", test="te.txt").build()
    (tmp_path / "short.txt").write_text("SessionId\tItemId\tTime\n1\t100\n")
    with pytest.raises(DataError, match=r"short\.txt, line 2: 2 field"):
        PreparedSessionSource(path=str(tmp_path), train="short.txt", test="te.txt").build()
    (tmp_path / "hdr.txt").write_text("Session\tItem\tTime\n1\t100\t10\n")
    with pytest.raises(DataError, match=r"hdr\.txt, line 1: no column 'SessionId'"):
        PreparedSessionSource(path=str(tmp_path), train="hdr.txt", test="te.txt").build()
    with pytest.raises(DataError, match="missing nope.txt"):
        PreparedSessionSource(path=str(tmp_path), train="nope.txt", test="te.txt").fingerprint()
    with pytest.raises(ConfigError, match="has no download"):
        PreparedSessionSource(path=None, download_dir=str(tmp_path), train="tr.txt").fingerprint()


def test_prepared_fingerprint_follows_file_content(tmp_path):
    write_prepared(tmp_path)
    src = PreparedSessionSource(path=str(tmp_path), train="tr.txt", test="te.txt")
    before = src.fingerprint()
    (tmp_path / "te.txt").write_text("SessionId\tItemId\tTime\n1\t100\t99.0\n1\t200\t100.0\n")
    assert PreparedSessionSource(path=str(tmp_path), train="tr.txt", test="te.txt").fingerprint() != before


def test_yoochoose_raw_clicks_iso_times(tmp_path):
    lines = []
    for s in range(1, 7):
        day = "2014-04-01" if s <= 4 else "2014-04-03"
        for k, item in enumerate(["214536502", "214536500", "214536506"][: 2 + s % 2]):
            lines.append(f"{s},{day}T10:5{k}:09.277Z,{item},0")
    path = tmp_path / "yoochoose-clicks.dat"
    path.write_text("\n".join(lines) + "\n")
    splits = YoochooseClicksSource(path=str(tmp_path), preprocessing=NO_FILTER).build()
    assert splits.train.num_sessions == 4 and splits.test.num_sessions == 2
    t = splits.train.times[0]
    assert t == pytest.approx(np.datetime64("2014-04-01T10:50:09.277").astype("datetime64[ms]").astype(np.int64) / 1000)
    path.write_text("1,2014-04-01T10:50:09.277Z,214536502,0\n1,yesterday,214536500,0\n")
    with pytest.raises(DataError, match=r"yoochoose-clicks\.dat, line 2: time column 1 has the value 'yesterday', not an ISO"):
        YoochooseClicksSource(path=str(path)).build()
    with pytest.raises(ConfigError, match="data.path"):
        YoochooseClicksSource(path=None)


def test_diginetica_time_is_date_plus_timeframe(tmp_path):
    rows = ["session_id;user_id;item_id;timeframe;eventdate"]
    rows += ["1;NA;81766;526309;2016-05-09", "1;NA;31331;1031018;2016-05-09", "1;NA;32118;243569;2016-05-09"]
    rows += ["2;7;81766;10;2016-05-20", "2;7;31331;20;2016-05-20"]
    (tmp_path / "train-item-views.csv").write_text("\n".join(rows) + "\n")
    splits = DigineticaSource(path=str(tmp_path), preprocessing={**NO_FILTER, "test_days": 7}).build()
    assert sequences(splits, "train") == [["32118", "81766", "31331"]]  # ordered by timeframe
    day = np.datetime64("2016-05-09").astype("datetime64[s]").astype(np.int64)
    assert splits.train.times[0] == pytest.approx(day + 243.569)
    assert sequences(splits, "test") == [["81766", "31331"]]


def test_csv_with_column_mapping_and_sessions_from_user_gaps(tmp_path):
    path = tmp_path / "clicks.csv"
    path.write_text('user,product,ts\nu1,"p 1",1000\nu1,p2,1100\nu1,p2,900000\nu1,p3,900100\nu2,p1,2000\nu2,p3,2200\n')
    src = CsvSessionSource(path=str(path), session_column=None, user_column="user", session_gap=3600,
                           item_column="product", time_column="ts", preprocessing={**NO_FILTER, "test_days": 0.5})
    splits = src.build()
    assert sequences(splits, "train") == [["p 1", "p2"], ["p1", "p3"]]
    assert sequences(splits, "test") == [["p2", "p3"]]
    # ISO / date time formats and index columns without header
    path2 = tmp_path / "noheader.tsv"
    path2.write_text("a\ts1\t2020-01-01\nb\ts1\t2020-01-01\na\ts2\t2020-01-05\nb\ts2\t2020-01-05\n")
    src2 = CsvSessionSource(path=str(path2), session_column=1, item_column=0, time_column=2, delimiter="\t",
                            header=False, time_format="date", preprocessing=NO_FILTER)
    assert src2.build().train.num_sessions == 1
    with pytest.raises(ConfigError, match="user_column and session_gap"):
        CsvSessionSource(path=str(path), session_column=None)
    with pytest.raises(DataError, match="no column 'item_id'"):
        CsvSessionSource(path=str(path), session_column="user").build()
    path.write_text("session_id,item_id,timestamp\n1,a,10\n1,b,soon\n")
    with pytest.raises(DataError, match=r"clicks\.csv, line 3: time column 'timestamp' has the non-numeric value 'soon'"):
        CsvSessionSource(path=str(path)).build()


def test_read_columns_two_char_delimiter_and_blank_lines(tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_text("1::10::5::978300760\n\n2::20::3::978302109\n")
    src = CsvSessionSource(path=str(path), session_column=None, user_column=0, item_column=1, time_column=3,
                           session_gap=60, delimiter="::", header=False)
    ev = src.read_events()
    assert ev.item_ids[ev.items].tolist() == ["10", "20"]
    # ':' splits '::' around an empty field
    a, b = read_columns(path, [Column(0, "user", "int"), Column(2, "item", "int")], sep=":", header=False, expected="x")
    assert a.tolist() == [1, 2] and b.tolist() == [10, 20]
    with pytest.raises(DataError, match=r"ratings\.dat, line 1: empty item id in column 1; expected x"):
        read_columns(path, [Column(0, "user", "int"), Column(1, "item", "int")], sep=":", header=False, expected="x")


def test_synthetic_sessions_are_seeded_and_have_sequential_structure():
    a = generate_synthetic_sessions(num_items=200, num_sessions=500, seed=3)
    b = generate_synthetic_sessions(num_items=200, num_sessions=500, seed=3)
    c = generate_synthetic_sessions(num_items=200, num_sessions=500, seed=4)
    np.testing.assert_array_equal(a.items, b.items)
    assert not np.array_equal(a.items, c.items)
    # transitions are concentrated: the most frequent successor of an item is far more likely than chance
    ev = generate_synthetic_sessions(num_items=200, num_sessions=3000, seed=0).sorted()
    same = ev.sessions[1:] == ev.sessions[:-1]
    pairs = np.stack([ev.items[:-1][same], ev.items[1:][same]], 1)
    keys, counts = np.unique(pairs[:, 0] * 200 + pairs[:, 1], return_counts=True)
    top = np.zeros(200)
    np.maximum.at(top, keys // 200, counts)
    out = np.bincount(pairs[:, 0], minlength=200)
    busy = out >= 20
    assert (top[busy] / out[busy]).mean() > 0.2  # uniform next items would give ~1/200
    splits = SyntheticSessionSource(num_items=200, num_sessions=2000, num_days=5.0, seed=0).build()
    splits.validate()
    assert splits.test.num_sessions > 0 and splits.valid.num_sessions > 0
    assert splits.test.times.min() >= splits.train.times.max() - DAY


def test_rsc15_100k_counts_match_the_datasets_readme():
    folder = shared("rsc15_100k")
    splits = PreparedSessionSource(path=str(folder)).build()
    assert splits.num_items == 2_933
    assert (splits.train.num_sessions, splits.train.num_events) == (17_794, 70_278)
    # every test item of the sample occurs in train, so nothing is dropped
    assert (splits.test.num_sessions, splits.test.num_events) == (3_416, 13_568)
    # an independent parse of one file
    raw = np.loadtxt(folder / "yoochoose-clicks-100k_test.txt", skiprows=1, delimiter="\t")
    assert sorted(np.unique(raw[:, 1]).astype(np.int64).astype(str).tolist()) == sorted(
        set(splits.item_ids[splits.test.items].tolist()))


def test_diginetica_sample_parses():
    folder = shared("diginetica_sample")
    src = DigineticaSource(path=str(folder), preprocessing={"min_item_support": 1, "test_days": 7, "valid_days": 7})
    splits = src.build()
    splits.validate()
    total = sum(splits.split(n).num_events for n in ("train", "valid", "test"))
    assert total <= 12_391 - 933  # the 933 length-1 sessions are gone
    assert splits.train.num_sessions > 1000


def test_movielens_ratings_become_gap_sessions(tmp_path):
    from recsys.data.sources.session_files import MovieLensSessionSource

    rows, t = [], 978_300_000
    for user in (1, 2, 3):
        for k, movie in enumerate((10, 20, 30)):
            rows.append(f"{user}::{movie}::4::{t + 60 * k}")  # one sitting
        for k, movie in enumerate((20, 10)):
            rows.append(f"{user}::{movie}::{5 if user < 3 else 3}::{t + 10 * 86400 + 60 * k}")  # a new session
    (tmp_path / "ratings.dat").write_text("\n".join(rows) + "\n")
    src = MovieLensSessionSource(path=str(tmp_path), session_gap=3600,
                                 preprocessing={"min_item_support": 1, "test_days": 1, "valid_days": 0})
    splits = src.build()
    assert sequences(splits, "train") == [["10", "20", "30"]] * 3
    assert sequences(splits, "test") == [["20", "10"]] * 3
    kept = MovieLensSessionSource(path=str(tmp_path), rating_threshold=4,
                                  preprocessing={"min_item_support": 1, "test_days": 1, "valid_days": 0}).build()
    assert kept.test.num_sessions == 2  # user 3's later ratings (3 stars) are below the threshold
