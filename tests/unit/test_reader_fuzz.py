"""Property-based tests of every graph and session reader (hypothesis).

Two properties per reader:

* **correct parse**: a file generated from known (user, item[, …]) rows, with harmless mutations (a UTF-8
  byte-order mark, CRLF line ends, trailing blank lines), parses to exactly those rows (the oracle is the
  generated list, not the reader);
* **no crash**: the same file damaged at random (truncated, a byte replaced or inserted, invalid UTF-8, a
  huge or negative id, the wrong delimiter, tabs for spaces, emptied) either parses or raises the project's
  :class:`DataError` naming the file — and the line when the damage is confined to one data line. Nothing
  else escapes (``ValueError``, ``UnicodeDecodeError``, ``OverflowError``, pandas' ``ParserError`` …), and a
  failed build leaves no cache file behind.

Examples are derandomized and the example database is off, so CI runs are reproducible
(``RECSYS_FUZZ_EXAMPLES`` raises the example count for a longer local search).
"""

from __future__ import annotations

import calendar
import datetime as dt
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys.data.cache import load_or_build
from recsys.data.session_data import SessionSplits
from recsys.data.sources import (
    LastFMSource,
    MovieLensSource,
    RecBoleInterSource,
    SplitFolderSource,
    TabularSource,
)
from recsys.data.sources.session_files import (
    CsvSessionSource,
    DigineticaSource,
    MovieLensSessionSource,
    PreparedSessionSource,
    YoochooseClicksSource,
)
from recsys.errors import DataError

# RECSYS_FUZZ_EXAMPLES=500 for a longer local search (the default keeps the file well under a minute)
FUZZ = settings(max_examples=int(os.environ.get("RECSYS_FUZZ_EXAMPLES", "40")), deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
NO_FILTER = {"min_item_support": 1, "valid_days": 0}

ids = st.integers(min_value=0, max_value=2**62)
small_ids = st.integers(min_value=0, max_value=50)
rows = st.lists(st.tuples(st.one_of(small_ids, ids), st.one_of(small_ids, ids)), min_size=1, max_size=25)


# -- mutations ---------------------------------------------------------------------------------------
@st.composite
def harmless(draw) -> Callable[[str], bytes]:
    """BOM, CRLF and trailing blank lines: the parse must not change."""
    bom, crlf, blank = draw(st.booleans()), draw(st.booleans()), draw(st.integers(0, 3))

    def apply(text: str) -> bytes:
        text = text + "\n" * blank
        if crlf:
            text = text.replace("\n", "\r\n")
        return (b"\xef\xbb\xbf" if bom else b"") + text.encode()

    return apply


DAMAGE = ("truncate", "replace_byte", "insert_byte", "invalid_utf8", "huge_id", "negative_id", "delimiter",
          "tabs_spaces", "empty", "drop_field", "extra_field")


@st.composite
def damage(draw) -> tuple[str, int, int]:
    """(kind, position seed, byte): resolved against the file by :func:`apply_damage`."""
    return draw(st.sampled_from(DAMAGE)), draw(st.integers(0, 10**9)), draw(st.integers(0, 255))


def apply_damage(raw: bytes, kind: str, seed: int, byte: int, header: bool) -> tuple[bytes, int | None]:
    """The damaged bytes and the 1-based line the damage is confined to (``None``: not one line)."""
    lines = raw.split(b"\n")
    first = 1 if header else 0
    data_lines = [k for k in range(first, len(lines)) if lines[k].strip()]
    if kind == "empty" or not data_lines:
        return b"", None
    if kind == "truncate":
        return raw[: seed % max(len(raw), 1)], None
    if kind in ("replace_byte", "insert_byte"):
        pos = seed % len(raw)
        new = raw[:pos] + bytes([byte]) + raw[pos + (kind == "replace_byte"):]
        return new, None
    k = data_lines[seed % len(data_lines)]
    line = lines[k]
    fields = line.split(b"\t") if b"\t" in line else line.split(b",") if b"," in line else line.split(b" ")
    sep = b"\t" if b"\t" in line else b"," if b"," in line else b" "
    j = seed % len(fields)
    if kind == "invalid_utf8":
        fields[j] = fields[j] + b"\xff\xfe"
    elif kind == "huge_id":
        fields[j] = b"9" * (20 + seed % 30)
    elif kind == "negative_id":
        fields[j] = b"-" + fields[j].lstrip(b"-")
    elif kind == "delimiter":
        sep = {b"\t": b";", b",": b"|", b" ": b","}[sep]
    elif kind == "tabs_spaces":
        sep = {b"\t": b" ", b",": b"\t", b" ": b"\t"}[sep]
    elif kind == "drop_field":
        fields = fields[:-1] if len(fields) > 1 else [b""]
    elif kind == "extra_field":
        fields = [*fields, b"x7"]
    lines[k] = sep.join(fields)
    return b"\n".join(lines), k + 1


def check_outcome(run: Callable[[], object], damaged: Path, line: int | None, cache_dir: Path | None = None) -> None:
    """Only a parse or a DataError naming the file (and the line when the damage is in one line)."""
    try:
        run()
    except DataError as err:
        message = str(err)
        assert damaged.name in message or str(damaged.parent) in message, message
        if line is not None and "line" in message and damaged.name in message:
            assert f"line {line}" in message, message
        if cache_dir is not None and cache_dir.exists():
            assert not list(cache_dir.glob("*.npz")), "a failed build left a cache file"


def workdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="fuzz-")


# -- graph readers: correct parse --------------------------------------------------------------------
def pairs_of(inter) -> list[tuple[str, str]]:
    """(user, item) pairs of :class:`Interactions` in original ids, as strings (sorted)."""
    return sorted(zip(np.asarray(inter.user_ids)[inter.users].astype(str).tolist(),
                      np.asarray(inter.item_ids)[inter.items].astype(str).tolist(), strict=True))


def as_user_lines(pairs: list[tuple[int, int]]) -> tuple[str, list[tuple[str, str]]]:
    """``user item item …`` lines (one per distinct user, in first-seen order) and the expected pairs."""
    by_user: dict[int, list[int]] = {}
    for u, i in pairs:
        by_user.setdefault(u, []).append(i)
    text = "\n".join(" ".join(map(str, [u, *items])) for u, items in by_user.items()) + "\n"
    return text, sorted((str(u), str(i)) for u, items in by_user.items() for i in items)


@FUZZ
@given(train=rows, test=rows, mutate=harmless())
def test_split_folder_parses_generated_files(train, test, mutate):
    with workdir() as d:
        folder = Path(d)
        (train_text, want_train), (test_text, want_test) = as_user_lines(train), as_user_lines(test)
        (folder / "train.txt").write_bytes(mutate(train_text))
        (folder / "test.txt").write_bytes(mutate(test_text))
        source = SplitFolderSource(path=str(folder))
        assert pairs_of(source.read(source.files())) == sorted(want_train + want_test)


@FUZZ
@given(data=rows, mutate=harmless(), dat=st.booleans())
def test_movielens_udata_and_dat_parse_generated_files(data, mutate, dat):
    with workdir() as d:
        sep = "::" if dat else "\t"
        name = "ratings.dat" if dat else "u.data"
        path = Path(d) / name
        path.write_bytes(mutate("".join(f"{u}{sep}{i}{sep}{k % 5 + 1}{sep}{1000 + k}\n"
                                        for k, (u, i) in enumerate(data))))
        source = MovieLensSource(variant="1m" if dat else "100k", path=str(path))
        inter = source.read(source.files())
        assert pairs_of(inter) == sorted((str(u), str(i)) for u, i in data)
        assert inter.ratings.tolist() == [float(k % 5 + 1) for k in range(len(data))]


@FUZZ
@given(train=rows, test=rows, mutate=harmless())
def test_lastfm_parses_generated_files(train, test, mutate):
    with workdir() as d:
        folder = Path(d)
        for name, data in (("data1.txt", train), ("test1.txt", test)):
            (folder / name).write_bytes(mutate("".join(f"{u + 1}\t{i + 1}\t{k + 0.5}\n" for k, (u, i) in enumerate(data))))
        source = LastFMSource(path=str(folder))
        inter = source.read(source.files())
        assert pairs_of(inter) == sorted((str(u + 1), str(i + 1)) for u, i in train + test)


labels = st.one_of(ids.map(str), st.text(alphabet="abcxyz_-0123456789", min_size=1, max_size=12))


@FUZZ
@given(data=st.lists(st.tuples(labels, labels), min_size=1, max_size=25), mutate=harmless(),
       fmt=st.sampled_from(["csv", "tsv"]), trailing_space=st.booleans())
def test_tabular_parses_generated_files(data, mutate, fmt, trailing_space):
    with workdir() as d:
        sep = "," if fmt == "csv" else "\t"
        pad = " " if trailing_space else ""
        path = Path(d) / f"inter.{fmt}"
        path.write_bytes(mutate(f"user_id{sep}item_id\n" + "".join(f"{u}{sep}{i}{pad}\n" for u, i in data)))
        source = TabularSource(path=str(path))
        inter = source.read(source.files())
        # a column of integers is read as numbers (``007`` is 7); any other column keeps its labels as written
        users, items = ([str(int(v)) for v in col] if all(v.isdigit() for v in col) else list(col)
                        for col in zip(*data, strict=True))
        assert pairs_of(inter) == sorted(zip(users, items, strict=True))


@FUZZ
@given(data=st.lists(st.tuples(labels, labels, st.integers(1, 5)), min_size=1, max_size=25), mutate=harmless())
def test_recbole_parses_generated_files(data, mutate):
    with workdir() as d:
        path = Path(d) / "x.inter"
        path.write_bytes(mutate("user_id:token\titem_id:token\trating:float\n"
                                + "".join(f"{u}\t{i}\t{r}\n" for u, i, r in data)))
        source = RecBoleInterSource(path=str(path), rating_field="rating")
        inter = source.read(source.files())
        assert pairs_of(inter) == sorted((u, i) for u, i, _ in data)  # tokens are strings, kept as written
        assert sorted(inter.ratings.tolist()) == sorted(float(r) for _, _, r in data)


# -- session readers: correct parse ------------------------------------------------------------------
events = st.lists(st.tuples(st.one_of(small_ids, ids), st.one_of(small_ids, ids),
                            st.integers(0, 2**40).map(float)), min_size=1, max_size=25)


@FUZZ
@given(data=events, mutate=harmless())
def test_prepared_sessions_parse_generated_files(data, mutate):
    with workdir() as d:
        folder = Path(d)
        text = "SessionId\tItemId\tTime\n" + "".join(f"{s}\t{i}\t{t}\n" for s, i, t in data)
        (folder / "tr.txt").write_bytes(mutate(text))
        (folder / "te.txt").write_bytes(mutate(text))
        s, i, t = PreparedSessionSource(path=str(folder), train="tr.txt", test="te.txt").read("train")
        assert list(zip(s.tolist(), i.tolist(), t.tolist(), strict=True)) == data


@FUZZ
@given(data=st.lists(st.tuples(labels, labels, st.integers(0, 2**40)), min_size=1, max_size=25), mutate=harmless(),
       delimiter=st.sampled_from([",", ";", "\t", "::"]))
def test_csv_sessions_parse_generated_files(data, mutate, delimiter):
    with workdir() as d:
        path = Path(d) / "clicks.csv"
        path.write_bytes(mutate(f"session_id{delimiter}item_id{delimiter}timestamp\n"
                                + "".join(f"{s}{delimiter}{i}{delimiter}{t}\n" for s, i, t in data)))
        ev = CsvSessionSource(path=str(path), delimiter=delimiter).read_events()
        got = list(zip(ev.session_ids[ev.sessions].tolist(), ev.item_ids[ev.items].tolist(), ev.times.tolist(),
                       strict=True))
        assert got == [(s, i, float(t)) for s, i, t in data]


def events_of(ev) -> list[tuple[object, object, float]]:
    """(session id, item id, time) of every event of :class:`SessionEvents`, in file order."""
    return list(zip(ev.session_ids[ev.sessions].tolist(), ev.item_ids[ev.items].tolist(), ev.times.tolist(),
                    strict=True))


clicks = st.lists(st.tuples(st.one_of(small_ids, ids), st.one_of(small_ids, ids),
                            st.integers(0, 20 * 365 * 86_400_000)), min_size=1, max_size=25)


@FUZZ
@given(data=clicks, mutate=harmless(), category=st.sampled_from(["0", "S", "2053", ""]))
def test_yoochoose_clicks_parse_generated_files(data, mutate, category):
    with workdir() as d:
        path = Path(d) / "yoochoose-clicks.dat"
        start = dt.datetime(2010, 1, 1, tzinfo=dt.timezone.utc)
        stamp = [(start + dt.timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" for _, _, ms in data]
        path.write_bytes(mutate("".join(f"{s},{t},{i},{category}\n" for (s, i, _), t in zip(data, stamp, strict=True))))
        ev = YoochooseClicksSource(path=str(path)).read_events()
        epoch = calendar.timegm(start.timetuple())
        assert events_of(ev) == [(s, i, (epoch * 1000 + ms) / 1000.0) for s, i, ms in data]


@FUZZ
@given(data=st.lists(st.tuples(st.one_of(small_ids, ids), st.one_of(small_ids, ids), st.integers(0, 10**9),
                               st.integers(0, 3000), st.one_of(st.just("NA"), small_ids.map(str))),
                     min_size=1, max_size=25), mutate=harmless())
def test_diginetica_parses_generated_files(data, mutate):
    with workdir() as d:
        path = Path(d) / "train-item-views.csv"
        day = [dt.date(2016, 1, 1) + dt.timedelta(days=k) for _, _, _, k, _ in data]
        path.write_bytes(mutate("session_id;user_id;item_id;timeframe;eventdate\n" + "".join(
            f"{s};{u};{i};{tf};{d.isoformat()}\n" for (s, i, tf, _, u), d in zip(data, day, strict=True))))
        ev = DigineticaSource(path=str(path)).read_events()
        want = [(s, i, calendar.timegm(d.timetuple()) + tf / 1000.0) for (s, i, tf, _, _), d in zip(data, day, strict=True)]
        assert events_of(ev) == want


@FUZZ
@given(data=st.lists(st.tuples(st.integers(1, 6), st.one_of(small_ids, ids), st.integers(1, 5),
                               st.integers(978_300_000, 978_300_000 + 10 * 86_400)), min_size=1, max_size=30),
       mutate=harmless(), gap=st.sampled_from([60.0, 3600.0, 86_400.0]), threshold=st.sampled_from([None, 3, 4]))
def test_movielens_sessions_parse_generated_files(data, mutate, gap, threshold):
    with workdir() as d:
        path = Path(d) / "ratings.dat"
        path.write_bytes(mutate("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in data)))
        ev = MovieLensSessionSource(path=str(path), session_gap=gap, rating_threshold=threshold).read_events()
        # oracle: each user's kept ratings in time order (ties in file order), a new session after a longer gap
        kept = [(u, k, i, float(t)) for k, (u, i, r, t) in enumerate(data) if threshold is None or r >= threshold]
        sessions, last = [], {}
        for u, _, i, t in sorted(kept, key=lambda e: (e[0], e[3], e[1])):
            if u not in last or t - last[u] > gap:
                sessions.append([])
            sessions[-1].append((i, t))
            last[u] = t
        got: dict[object, list[tuple[object, float]]] = {}
        for s, i, t in events_of(ev):
            got.setdefault(s, []).append((i, t))
        assert sorted(sorted(v) for v in got.values()) == sorted(sorted(v) for v in sessions)
        assert len(ev) == len(kept)


# -- every reader: damaged files ---------------------------------------------------------------------
def graph_case(kind: str, folder: Path, data: list[tuple[int, int]]) -> tuple[Path, bool, Callable[[], object]]:
    """A valid file for reader ``kind`` in ``folder``; returns (file to damage, has header, build-and-cache)."""
    cache = folder / "cache"
    text_pairs = "".join(f"{u} {i} {i + 1}\n" for u, i in data)
    if kind == "split_folder":
        (folder / "train.txt").write_text(text_pairs)
        (folder / "test.txt").write_text(text_pairs)
        return folder / "train.txt", False, lambda: load_or_build(SplitFolderSource(path=str(folder)), cache)
    if kind == "ml_100k":
        p = folder / "u.data"
        p.write_text("".join(f"{u}\t{i}\t5\t{k}\n" for k, (u, i) in enumerate(data)))
        return p, False, lambda: load_or_build(MovieLensSource(variant="100k", path=str(p), split="random"), cache)
    if kind == "ml_1m":
        p = folder / "ratings.dat"
        p.write_text("".join(f"{u}::{i}::5::{k}\n" for k, (u, i) in enumerate(data)))
        return p, False, lambda: load_or_build(MovieLensSource(variant="1m", path=str(p)), cache)
    if kind == "ml_latest_small":
        p = folder / "ratings.csv"
        p.write_text("userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},4.5,{k}\n" for k, (u, i) in enumerate(data)))
        return p, True, lambda: load_or_build(MovieLensSource(variant="latest-small", path=str(p)), cache)
    if kind == "lastfm":
        for name in ("data1.txt", "test1.txt"):
            (folder / name).write_text("".join(f"{u + 1}\t{i + 1}\t3.2e+01\n" for u, i in data))
        return folder / "data1.txt", False, lambda: load_or_build(LastFMSource(path=str(folder)), cache)
    if kind == "csv":
        p = folder / "inter.csv"
        p.write_text("user_id,item_id,rating\n" + "".join(f"{u},{i},1\n" for u, i in data))
        return p, True, lambda: load_or_build(TabularSource(path=str(p), rating_col="rating"), cache)
    if kind == "tsv":
        p = folder / "inter.tsv"
        p.write_text("user_id\titem_id\n" + "".join(f"{u}\t{i}\n" for u, i in data))
        return p, True, lambda: load_or_build(TabularSource(path=str(p)), cache)
    if kind == "recbole":
        p = folder / "x.inter"
        p.write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "".join(f"{u}\t{i}\t{k}\n" for k, (u, i) in enumerate(data)))
        return p, True, lambda: load_or_build(RecBoleInterSource(path=str(p), time_field="timestamp"), cache)
    raise AssertionError(kind)


GRAPH_KINDS = ("split_folder", "ml_100k", "ml_1m", "ml_latest_small", "lastfm", "csv", "tsv", "recbole")


@pytest.mark.parametrize("kind", GRAPH_KINDS)
@FUZZ
@given(data=rows, hurt=damage())
def test_graph_readers_survive_damaged_files(kind, data, hurt):
    with workdir() as d:
        folder = Path(d)
        target, header, run = graph_case(kind, folder, data)
        raw, line = apply_damage(target.read_bytes(), *hurt, header=header)
        target.write_bytes(raw)
        check_outcome(run, target, line, folder / "cache")


def session_case(kind: str, folder: Path, data: list[tuple[int, int]]) -> tuple[Path, Callable[[], object]]:
    cache = folder / "cache"

    def build(source) -> Callable[[], object]:
        return lambda: load_or_build(source, cache, SessionSplits.load)

    lines = [(s % 7, i, 1_400_000_000 + k * 60) for k, (s, i) in enumerate(data)]
    if kind == "rsc15":
        for name in ("tr.txt", "te.txt"):
            (folder / name).write_text("SessionId\tItemId\tTime\n" + "".join(f"{s}\t{i}\t{t}.5\n" for s, i, t in lines))
        return folder / "tr.txt", build(PreparedSessionSource(path=str(folder), train="tr.txt", test="te.txt"))
    if kind == "yoochoose":
        p = folder / "yoochoose-clicks.dat"
        p.write_text("".join(f"{s},2014-04-0{1 + k % 7}T10:51:09.277Z,{i},0\n" for k, (s, i, _) in enumerate(lines)))
        return p, build(YoochooseClicksSource(path=str(p), preprocessing=NO_FILTER))
    if kind == "diginetica":
        p = folder / "train-item-views.csv"
        p.write_text("session_id;user_id;item_id;timeframe;eventdate\n"
                     + "".join(f"{s};NA;{i};{k * 1000};2016-05-0{1 + k % 7}\n" for k, (s, i, _) in enumerate(lines)))
        return p, build(DigineticaSource(path=str(p), preprocessing=NO_FILTER))
    if kind == "csv_sessions":
        p = folder / "clicks.csv"
        p.write_text("session_id,item_id,timestamp\n" + "".join(f"{s},{i},{t}\n" for s, i, t in lines))
        return p, build(CsvSessionSource(path=str(p), preprocessing=NO_FILTER))
    if kind == "csv_sessions_iso":
        p = folder / "clicks.tsv"
        p.write_text("user\titem\twhen\n" + "".join(f"u{s}\t{i}\t2014-04-0{1 + k % 7}T10:00:0{k % 10}\n"
                                                     for k, (s, i, _) in enumerate(lines)))
        return p, build(CsvSessionSource(path=str(p), session_column=None, user_column="user", item_column="item",
                                         time_column="when", session_gap=3600, delimiter="\t", time_format="iso",
                                         preprocessing=NO_FILTER))
    if kind == "ml_1m_sessions":
        p = folder / "ratings.dat"
        p.write_text("".join(f"{s + 1}::{i}::{1 + k % 5}::{t}\n" for k, (s, i, t) in enumerate(lines)))
        return p, build(MovieLensSessionSource(path=str(p), session_gap=120, preprocessing=NO_FILTER))
    raise AssertionError(kind)


SESSION_KINDS = ("rsc15", "yoochoose", "diginetica", "csv_sessions", "csv_sessions_iso", "ml_1m_sessions")


@pytest.mark.parametrize("kind", SESSION_KINDS)
@FUZZ
@given(data=rows, hurt=damage())
def test_session_readers_survive_damaged_files(kind, data, hurt):
    with workdir() as d:
        folder = Path(d)
        target, run = session_case(kind, folder, data)
        raw, line = apply_damage(target.read_bytes(), *hurt, header=kind not in ("yoochoose", "ml_1m_sessions"))
        target.write_bytes(raw)
        check_outcome(run, target, line, folder / "cache")


# -- targeted: the fault and its line are named --------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "bad_line", "what"),
    [
        ("split_folder", b"3 5 \xff\xfe", "non-integer token"),
        ("split_folder", b"3 " + b"9" * 25, "too large"),
        ("split_folder", b"3 -5", "negative id"),
        ("ml_1m", b"3::5::5", "fields"),
        ("csv", b"3,\xff\xfe,1", "not valid UTF-8"),
        ("lastfm", b"4\t" + b"9" * 25 + b"\t1", "beyond int64"),
        ("tsv", b"3", "1 field '3'"),
        ("recbole", b"3", "1 field '3'"),
    ],
)
def test_graph_faults_name_file_and_line(tmp_path, kind, bad_line, what):
    target, header, run = graph_case(kind, tmp_path, [(1, 2), (2, 3), (3, 4)])
    lines = target.read_bytes().split(b"\n")
    lines[2] = bad_line
    target.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=rf"{target.name}, line 3: .*{what}"):
        run()
    assert not list((tmp_path / "cache").glob("*.npz"))


@pytest.mark.parametrize(
    ("kind", "bad_line", "what"),
    [
        ("rsc15", b"1\t" + b"9" * 22 + b"\t10", "beyond int64"),
        ("rsc15", b"1\t2\tnan", "non-finite value 'nan'"),
        ("rsc15", b"1\t2\t\xff", "not valid UTF-8"),
        ("rsc15", b"   ", None),  # whitespace-only lines are blank lines, not errors
        ("csv_sessions", b"1,2,inf", "non-finite value 'inf'"),
        ("csv_sessions", b"1," + b"x" * 70 + b",5", "at most 63 characters"),
        ("yoochoose", b"1,NaT,5,0", "not an ISO timestamp"),
        ("csv_sessions_iso", b"u1\t5\tyesterday", "not an ISO timestamp"),
    ],
)
def test_session_faults_name_file_and_line(tmp_path, kind, bad_line, what):
    target, run = session_case(kind, tmp_path, [(1, 2), (1, 3), (2, 4), (2, 2), (3, 3), (3, 4)])
    lines = target.read_bytes().split(b"\n")
    lines[2] = bad_line
    target.write_bytes(b"\n".join(lines))
    if what is None:
        run()
        return
    with pytest.raises(DataError, match=rf"{target.name}, line 3: .*{what}"):
        run()
    assert not list((tmp_path / "cache").glob("*.npz"))
