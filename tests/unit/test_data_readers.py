"""Readers on small fixture files written here, including the formats' quirks and bad input."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from recsys.data.sources import (
    LastFMSource,
    MovieLensSource,
    RecBoleInterSource,
    SplitFolderSource,
    TabularSource,
)
from recsys.data.sources.int_tokens import parse_columns, parse_int_tokens
from recsys.errors import ConfigError, DataError


def pairs(splits, split: str, ids: bool = True) -> set[tuple[str, str]]:
    """(user, item) pairs of a split in original ids (an oracle independent of the dense re-indexing)."""
    u, i = getattr(splits, split)
    if not ids:
        return set(zip(u.tolist(), i.tolist(), strict=True))
    return set(zip(splits.user_ids[u].tolist(), splits.item_ids[i].tolist(), strict=True))


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# -- the vectorised tokenizer vs a Python oracle -------------------------------------------------------
def test_int_tokenizer_matches_python_split_on_random_text():
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(300):
        k = int(rng.integers(0, 8))
        toks = [str(int(v)) for v in rng.integers(0, 10**int(rng.integers(1, 19)), size=k, dtype=np.int64)]
        seps = [rng.choice([" ", "  ", "\t"]) for _ in toks]
        lines.append("".join(s + t for s, t in zip(seps, toks, strict=True)).lstrip() + rng.choice(["", " ", "\r"]))
    text = "\n".join(lines)
    tokens = parse_int_tokens(text.encode(), "x", "ints")
    expected_values = [int(t) for ln in lines for t in ln.split()]
    expected_lines = [n for n, ln in enumerate(lines) for _ in ln.split()]
    assert tokens.values.tolist() == expected_values
    assert tokens.line.tolist() == expected_lines
    assert tokens.num_lines == len(lines)


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("0 1 2\n1 -3 4\n", 2, "negative id '-3'"),
        ("0 1 2\n1 3\n2 x7\n", 3, "non-integer token 'x7'"),
        ("0 1.5\n", 1, "non-integer token '1.5'"),
        ("0 1\n1 12345678901234567890\n", 2, "too large"),
    ],
)
def test_int_tokenizer_errors_name_line_and_token(text, line, what):
    with pytest.raises(DataError, match=rf"f\.txt, line {line}: .*{what}"):
        parse_int_tokens(text.encode(), "f.txt", "ids")


def test_parse_columns_checks_field_count():
    table, lines = parse_columns(b"1\t2\t3\r\n\r\n4\t5\t6\r\n", "t.tsv", 3, "3 ints")
    assert table.tolist() == [[1, 2, 3], [4, 5, 6]] and lines.tolist() == [0, 2]
    with pytest.raises(DataError, match=r"t.tsv, line 2: 2 fields; expected 3 ints"):
        parse_columns(b"1 2 3\n4 5\n", "t.tsv", 3, "3 ints")


# -- LightGCN/NGCF split folders ---------------------------------------------------------------------
def split_folder(tmp_path: Path, train: str, test: str) -> Path:
    folder = tmp_path / "lgcn"
    write(folder / "train.txt", train)
    write(folder / "test.txt", test)
    return folder


def test_split_folder_reads_given_split_and_users_without_items(tmp_path):
    # user 3 has only its id in the test file, with a trailing space (Amazon-Book quirk); no final newline
    folder = split_folder(tmp_path, "0 0 1 2\n1 1 3\n2 0 4\n3 2 3\n", "0 3\n1 0\n2 1 2\n3 \n")
    s = SplitFolderSource(path=str(folder)).build()
    assert (s.num_users, s.num_items) == (4, 5)
    assert pairs(s, "train") == {("0", "0"), ("0", "1"), ("0", "2"), ("1", "1"), ("1", "3"), ("2", "0"), ("2", "4"),
                                 ("3", "2"), ("3", "3")}
    assert pairs(s, "test") == {("0", "3"), ("1", "0"), ("2", "1"), ("2", "2")}
    assert len(s.valid[0]) == 0
    assert s.meta["split"] == "given"


def test_split_folder_crlf_blank_lines_and_duplicates(tmp_path):
    folder = split_folder(tmp_path, "0 1 1 2\r\n\r\n1 0 2\r\n", "0 0\n1 1\n")
    s = SplitFolderSource(path=str(folder)).build()
    assert pairs(s, "train") == {("0", "1"), ("0", "2"), ("1", "0"), ("1", "2")}
    assert len(s.train[0]) == 4  # the duplicate (0, 1) is dropped


def test_split_folder_pair_in_train_and_test_kept_in_train_only(tmp_path):
    folder = split_folder(tmp_path, "0 0 1\n1 0 1\n", "0 1\n1 0\n")
    s = SplitFolderSource(path=str(folder)).build()
    assert len(s.test[0]) == 0 and len(s.train[0]) == 4


@pytest.mark.parametrize(
    ("train", "test", "message"),
    [
        ("0 1 2\n1 -2\n", "0 1\n", r"train\.txt, line 2: negative id '-2'"),
        ("0 1 2\n1 2\n", "0 1\n1 a\n", r"test\.txt, line 2: non-integer token 'a'"),
        ("0 1 2\n1 2\n", "0 1\n1 2,3\n", r"test\.txt, line 2: non-integer token '2,3'"),
    ],
)
def test_split_folder_bad_tokens(tmp_path, train, test, message):
    with pytest.raises(DataError, match=message):
        SplitFolderSource(path=str(split_folder(tmp_path, train, test))).build()


def test_split_folder_missing_files_and_folder(tmp_path):
    with pytest.raises(DataError, match=r"data.path=.*nope: no such file or folder"):
        SplitFolderSource(path=str(tmp_path / "nope")).fingerprint()
    write(tmp_path / "half" / "train.txt", "0 1\n")
    with pytest.raises(DataError, match=r"missing test\.txt"):
        SplitFolderSource(path=str(tmp_path / "half")).fingerprint()


def test_data_path_may_name_a_file_of_the_folder(tmp_path):
    folder = split_folder(tmp_path, "0 0 1\n1 1 2\n", "0 2\n1 0\n")
    s = SplitFolderSource(path=str(folder / "train.txt")).build()  # a several-file source reads its folder
    assert len(s.train[0]) == 4 and len(s.test[0]) == 2


def test_split_folder_ids_beyond_user_and_item_lists(tmp_path):
    folder = split_folder(tmp_path, "0 0 1\n1 2\n", "0 2\n1 3\n")
    write(folder / "user_list.txt", "org_id remap_id\n100 0\n101 1\n")
    write(folder / "item_list.txt", "org_id remap_id\n7 0\n8 1\n9 2\n")
    with pytest.raises(DataError, match=r"test\.txt, line 2: item id 3 is beyond item_list\.txt \(3 entries"):
        SplitFolderSource(path=str(folder)).build()
    write(folder / "item_list.txt", "org_id remap_id\n7 0\n8 1\n9 2\n10 3\n")
    write(folder / "test.txt", "0 2\n2 3\n")
    with pytest.raises(DataError, match=r"test\.txt, line 2: user id 2 is beyond user_list\.txt"):
        SplitFolderSource(path=str(folder)).build()


def test_split_folder_unseen_test_items_drop_or_keep(tmp_path, caplog):
    folder = split_folder(tmp_path, "0 0 1\n1 1 2\n", "0 2 3\n1 4\n")  # items 3 and 4 only in test
    dropped = SplitFolderSource(path=str(folder), unseen_items="drop").build()
    assert pairs(dropped, "test") == {("0", "2")} and dropped.num_items == 3
    assert "2 validation/test interactions (2 items) have items never seen in train" in caplog.text
    kept = SplitFolderSource(path=str(folder), unseen_items="keep").build()
    assert pairs(kept, "test") == {("0", "2"), ("0", "3"), ("1", "4")} and kept.num_items == 5


def test_split_folder_unknown_dataset_is_a_config_error():
    with pytest.raises(ConfigError, match="data.source.dataset='movies'"):
        SplitFolderSource(dataset="movies")


# -- LastFM (LightGCN-PyTorch) -----------------------------------------------------------------------
def test_lastfm_one_based_crlf_and_scientific_weights(tmp_path):
    folder = tmp_path / "lastfm"
    write(folder / "data1.txt", "1\t1\t13883\r\n1\t2\t3.2466e+05\r\n2\t2\t7\r\n")
    write(folder / "test1.txt", "1\t3\t5\n2\t1\t9\n")
    s = LastFMSource(path=str(folder), unseen_items="keep").build()
    assert pairs(s, "train") == {("1", "1"), ("1", "2"), ("2", "2")}
    assert pairs(s, "test") == {("1", "3"), ("2", "1")}
    thresholded = LastFMSource(path=str(folder), rating_threshold=10000, unseen_items="keep").build()
    assert pairs(thresholded, "train") == {("1", "1"), ("1", "2")}


def test_lastfm_errors(tmp_path):
    folder = tmp_path / "lastfm"
    write(folder / "data1.txt", "1\t1\t3\n0\t2\t3\n")
    write(folder / "test1.txt", "1\t2\t1\n")
    with pytest.raises(DataError, match=r"data1\.txt, line 2: id 0 in user column 0; expected ids >= 1"):
        LastFMSource(path=str(folder)).build()
    write(folder / "data1.txt", "1\t1\t3\n2\t2\tmany\n")
    with pytest.raises(DataError, match=r"data1\.txt, line 2: weight column 2 has the non-numeric value 'many'"):
        LastFMSource(path=str(folder)).build()


# -- MovieLens ---------------------------------------------------------------------------------------
UDATA = "1\t10\t5\t100\n1\t11\t3\t101\n2\t10\t4\t102\n2\t12\t5\t103\n3\t12\t1\t104\n"


def test_movielens_100k_threshold_and_times_from_zip_folder_and_file(tmp_path):
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ml-100k/u.data", UDATA)
    folder = tmp_path / "extracted" / "ml-100k"
    write(folder / "u.data", UDATA)
    results = []
    for path in (archive, folder, folder / "u.data"):
        s = MovieLensSource(variant="100k", path=str(path), rating_threshold=4, split="leave_one_out",
                            unseen_items="keep").build()
        results.append((pairs(s, "train"), pairs(s, "valid"), pairs(s, "test")))
    assert results[0] == results[1] == results[2]
    train, valid, test = results[0]
    # ratings >= 4: (1,10,t100) (2,10,t102) (2,12,t103); leave-one-out puts each user's latest in test
    assert test == {("2", "12")} and train == {("1", "10"), ("2", "10")} and valid == set()


def test_movielens_1m_dat_and_csv_variants(tmp_path):
    write(tmp_path / "ml-1m" / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978300761\n")
    s = MovieLensSource(variant="1m", path=str(tmp_path / "ml-1m"), rating_threshold=4, split="random",
                        split_ratios=[1.0, 0.0, 0.0]).build()
    assert pairs(s, "train") == {("1", "1193"), ("2", "1193")}
    write(tmp_path / "small" / "ratings.csv",
          "userId,movieId,rating,timestamp\n1,1,4.5,964982703\n1,3,3.5,964981247\n2,1,4.0,964982224\n")
    s = MovieLensSource(variant="latest-small", path=str(tmp_path / "small"), rating_threshold=4.0,
                        split_ratios=[1.0, 0.0, 0.0]).build()
    assert pairs(s, "train") == {("1", "1"), ("2", "1")}


def test_movielens_bad_rating_and_empty_after_threshold(tmp_path):
    write(tmp_path / "s" / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.5,1\n1,2,good,2\n")
    with pytest.raises(DataError, match=r"ratings\.csv, line 3: rating column 'rating' has the non-numeric value 'good'"):
        MovieLensSource(variant="latest-small", path=str(tmp_path / "s")).build()
    write(tmp_path / "l" / "u.data", "1\t1\t2\t5\n2\t1\t3\t6\n")
    with pytest.raises(DataError, match=r"rating filter \(data.source.rating_threshold=4.0\) removed all 2"):
        MovieLensSource(variant="100k", path=str(tmp_path / "l")).build()


# -- generic CSV/TSV/Parquet --------------------------------------------------------------------------
def test_csv_column_mapping_string_ids_and_given_split(tmp_path):
    train = write(tmp_path / "train.csv", "who,what,stars,when\nalice,book,5,2020-01-01\nbob,pen,2,2020-01-02\n"
                                          "bob,book,4,2020-01-03\ncarol,pen,5,2020-01-04\n")
    test = write(tmp_path / "test.csv", "who,what,stars,when\nalice,pen,5,2020-02-01\n")
    s = TabularSource(path=str(train), test_path=str(test), user_col="who", item_col="what", rating_col="stars",
                      time_col="when").build()
    assert pairs(s, "train") == {("alice", "book"), ("bob", "pen"), ("bob", "book"), ("carol", "pen")}
    assert pairs(s, "test") == {("alice", "pen")}
    assert sorted(s.user_ids.tolist()) == ["alice", "bob", "carol"]
    # date strings order the interactions: bob's latest (2020-01-03, book) is his leave-one-out test item
    s = TabularSource(path=str(train), user_col="who", item_col="what", time_col="when", split="leave_one_out",
                      unseen_items="keep").build()
    assert pairs(s, "test") == {("bob", "book")}


def test_tsv_without_header_by_position_and_temporal_split(tmp_path):
    rows = "".join(f"{u}\t{i}\t{t}\n" for u, i, t in [(7, 1, 30), (7, 2, 10), (7, 3, 20), (8, 1, 5), (8, 4, 6)])
    f = write(tmp_path / "x.tsv", rows)
    s = TabularSource(path=str(f), header=False, user_col=0, item_col=1, time_col=2, split="leave_one_out",
                      unseen_items="keep").build()
    assert pairs(s, "test") == {("7", "1"), ("8", "4")}
    assert pairs(s, "valid") == {("7", "3")}


def test_csv_errors_unknown_column_non_numeric_rating_missing_file(tmp_path):
    f = write(tmp_path / "d.csv", "user,item,rating\n1,2,5\n3,4,high\n")
    with pytest.raises(DataError, match=r"d\.csv, line 1: no column 'user_id', nor 'item_id', in the header \['user', "):
        TabularSource(path=str(f)).build()
    with pytest.raises(DataError, match=r"d\.csv, line 3: rating column 'rating' has the non-numeric value 'high'"):
        TabularSource(path=str(f), user_col="user", item_col="item", rating_col="rating").build()
    with pytest.raises(DataError, match=r"missing\.csv: no such file or folder"):
        TabularSource(path=str(tmp_path / "missing.csv")).fingerprint()
    with pytest.raises(ConfigError, match="needs data.path"):
        TabularSource(path=None)


def test_parquet_reader_or_clear_error_without_pyarrow(tmp_path):
    import pandas as pd

    f = tmp_path / "x.parquet"
    try:
        import pyarrow  # noqa: F401
    except ImportError:  # the optional extra is not installed: one clear line says how to get it
        write(f, b"PAR1")
        with pytest.raises(ConfigError, match=r"reading Parquet needs pyarrow: pip install 'recsys\[parquet\]'"):
            TabularSource(path=str(f), user_col="u", item_col="i").build()
        return
    pd.DataFrame({"u": [1, 1, 2], "i": [5, 6, 5]}).to_parquet(f)
    s = TabularSource(path=str(f), user_col="u", item_col="i", split_ratios=[1.0, 0.0, 0.0]).build()
    assert pairs(s, "train") == {("1", "5"), ("1", "6"), ("2", "5")}


# -- RecBole atomic files -----------------------------------------------------------------------------
INTER = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
         "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t377\t1\t878887116\n186\t242\t5\t880000000\n")


def test_recbole_inter_file_and_folder(tmp_path):
    f = write(tmp_path / "ml" / "ml.inter", INTER)
    for path in (f, f.parent):
        s = RecBoleInterSource(path=str(path), rating_field="rating", time_field="timestamp", rating_threshold=3,
                               split="leave_one_out", unseen_items="keep").build()
        # rating >= 3 drops (196, 377); user 196 keeps one interaction (train only), 186's latest is test
        assert pairs(s, "test") == {("186", "302")}
        assert pairs(s, "train") == {("196", "242"), ("186", "242")}


def test_recbole_benchmark_files_given_split(tmp_path):
    folder = tmp_path / "ds"
    write(folder / "ds.train.inter", "user_id:token\titem_id:token\na\tx\nb\ty\na\ty\n")
    write(folder / "ds.test.inter", "user_id:token\titem_id:token\nb\tx\n")
    s = RecBoleInterSource(path=str(folder), split="given").build()
    assert pairs(s, "test") == {("b", "x")} and len(s.train[0]) == 3


def test_recbole_header_errors(tmp_path):
    f = write(tmp_path / "a.inter", "user_id\titem_id:token\n1\t2\n")
    with pytest.raises(DataError, match=r"a\.inter, line 1: header column 'user_id'; expected 'name:type'"):
        RecBoleInterSource(path=str(f)).build()
    f = write(tmp_path / "b.inter", INTER)
    with pytest.raises(DataError, match=r"b\.inter, line 1: unknown column 'score' \(data.source.rating_field\)"):
        RecBoleInterSource(path=str(f), rating_field="score").build()
    f = write(tmp_path / "c.inter", INTER.replace("\t3\t881250949", "\tthree\t881250949"))
    with pytest.raises(DataError, match=r"c\.inter, line 2: rating column 'rating' has the non-numeric value 'three'"):
        RecBoleInterSource(path=str(f), rating_field="rating").build()


def test_readers_do_not_hold_io_handles(tmp_path):
    """Sanity: reading from an in-memory zip stream works with pandas (used for ml-20m/latest-small)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("ml-latest-small/ratings.csv", "userId,movieId,rating,timestamp\n1,2,5.0,3\n")
    write(tmp_path / "ml-latest-small.zip", buf.getvalue())
    s = MovieLensSource(variant="latest-small", path=str(tmp_path / "ml-latest-small.zip"),
                        split_ratios=[1.0, 0.0, 0.0]).build()
    assert pairs(s, "train") == {("1", "2")}
