"""The shared parsing layer (recsys.data.sources.delimited, .columns, .text): lines, chunks, blank lines, UTF-8, time formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.data.sources import columns, delimited
from recsys.data.sources.columns import Column, read_columns, time_column
from recsys.data.sources.delimited import read_table
from recsys.errors import DataError

INTS = [Column("s", "session", "int"), Column("i", "item", "int"), Column("t", "time", "time", "unix")]


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def test_chunks_give_the_same_columns_and_lines(tmp_path, monkeypatch):
    rows = [f"{k},{10 + k},{100 + k}.5" for k in range(10)]
    rows[4] = "   "  # a whitespace-only line in the second chunk is a blank line
    f = write(tmp_path / "c.csv", "s,i,t\r\n" + "\r\n".join(rows) + "\r\n\r\n")
    whole = read_columns(f, INTS, sep=",", expected="x", chunk_rows=None)
    monkeypatch.setattr(delimited, "SMALL_FILE", 0)  # force the chunked reader on a small file
    chunked = read_columns(f, INTS, sep=",", expected="x", chunk_rows=3)
    assert [a.tolist() for a in whole] == [a.tolist() for a in chunked]
    assert whole[0].tolist() == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    write(f, "s,i,t\n" + "\n".join(rows[:7] + ["8,x,1"] + rows[8:]) + "\n")
    with pytest.raises(DataError, match=r"c\.csv, line 9: item column 'i' has the non-integer value 'x'; expected x"):
        read_columns(f, INTS, sep=",", expected="x", chunk_rows=3)


def test_earliest_bad_row_whatever_its_column(tmp_path):
    f = write(tmp_path / "e.tsv", "s\ti\tt\n1\t2\t3\n1\t2\tsoon\n1\tx\t3\n")
    with pytest.raises(DataError, match=r"e\.tsv, line 3: time column 't' has the non-numeric value 'soon'"):
        read_columns(f, INTS, sep="\t", expected="x")


def test_blank_means_whitespace_only_and_unselected_fields_count(tmp_path):
    f = write(tmp_path / "b.csv", "1,2014-04-07T10:51:09.277Z,5,0\n,,,0\n")
    cols = [Column(0, "session", "int"), Column(1, "time", "time", "iso"), Column(2, "item", "int")]
    with pytest.raises(DataError, match=r"b\.csv, line 2: empty session id in column 0"):
        read_columns(f, cols, sep=",", header=False, expected="x")


def test_strict_utf8_even_in_unselected_columns(tmp_path):
    f = write(tmp_path / "u.csv", b"s,i,t,extra\n1,2,3,ok\n1,2,3,\xff\n")
    with pytest.raises(DataError, match=r"u\.csv, line 3: byte b'\\xff' is not valid UTF-8"):
        read_columns(f, INTS, sep=",", expected="x")


def test_short_rows_extra_fields_and_two_character_delimiter(tmp_path):
    f = write(tmp_path / "r.dat", "1::10::100::extra::fields\n2::20::200\n")
    cols = [Column(0, "session", "int"), Column(1, "item", "int"), Column(2, "time", "time")]
    s, i, t = read_columns(f, cols, sep="::", header=False, expected="x")
    assert (s.tolist(), i.tolist(), t.tolist()) == ([1, 2], [10, 20], [100.0, 200.0])
    write(f, "1::10\n2::20\n")  # every row too short
    with pytest.raises(DataError, match=r"r\.dat, line 1: 2 fields '1::10'; expected x"):
        read_columns(f, cols, sep="::", header=False, expected="x")
    write(f, "1::10::5\n\n2::20\n")
    with pytest.raises(DataError, match=r"r\.dat, line 3: 2 fields '2::20'; expected x"):
        read_columns(f, cols, sep="::", header=False, expected="x")


def test_unterminated_quote_names_its_line(tmp_path):
    f = write(tmp_path / "q.csv", 's,i,t\n1,2,3\n1,"2,3\n4,5,6\n')
    with pytest.raises(DataError, match=r"q\.csv, line 3: .*EOF inside string"):
        read_columns(f, INTS, sep=",", expected="x")


@pytest.mark.parametrize(
    ("fmt", "values", "seconds"),
    [
        ("unix", ["1396867869.277", "10"], [1396867869.277, 10.0]),
        ("unix_ms", ["1396867869277", "10"], [1396867869.277, 0.01]),
        ("iso", ["2014-04-07T10:51:09.277Z", "2014-04-07T11:51:09.2779+01:00"], [1396867869.277, 1396867869.277]),
        ("date", ["2016-05-09", " 2016-05-10 "], [1462752000.0, 1462838400.0]),
        ("auto", ["2016-05-09 00:00:00", "2016-05-10 00:00:01"], [1462752000.0, 1462838401.0]),
    ],
)
def test_one_time_conversion(tmp_path, fmt, values, seconds):
    f = write(tmp_path / "t.csv", "when\n" + "\n".join(values) + "\n")
    table = read_table(f, ["when"], dtype={"when": str}, na_values=("",))
    assert time_column(table, "when", time_format=fmt).tolist() == pytest.approx(seconds, abs=1e-9)
    write(f, "when\n" + values[0] + "\nsoon\n")
    table = read_table(f, ["when"], dtype={"when": str}, na_values=("",))
    with pytest.raises(DataError, match=r"t\.csv, line 3: time column 'when' has the (non-numeric )?value 'soon'"):
        time_column(table, "when", time_format=fmt)


def test_parquet_rows_are_named(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    f = tmp_path / "x.parquet"
    pd.DataFrame({"u": ["1", "2", "x"]}).to_parquet(f)
    table = read_table(f, ["u"])
    with pytest.raises(DataError, match=r"x\.parquet, row 3: user column 'u' has the non-integer value 'x'"):
        columns.integer_column(table, "u", "user")
    pd.DataFrame({"u": ["1", "2"]}).to_parquet(f)
    assert np.array_equal(columns.integer_column(read_table(f, ["u"]), "u", "user"), [1, 2])
