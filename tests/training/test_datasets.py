"""Data sets: canonical tables, the synthetic world, the KuaiRand / MicroLens adapters, the CLI.

The adapters run on small files written here in the real formats; nothing reads the shared
real data.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from core.cli import app
from core.config import Settings
from core.dataset_schema import TS, DataError, validate
from training.datasets import kuairand, load_dataset, microlens, write_dataset
from training.datasets.microlens import hashtags
from training.datasets.synth import TOPICS, SynthConfig, generate

runner = CliRunner()
SMALL = SynthConfig(n_users=300, n_videos=400, days=3, seed=7)


# --- fixtures in the real formats ---------------------------------------------------------


def write_kuairand(root: Path, drop: str | None = None) -> Path:
    """A tiny KuaiRand-Pure directory; ``drop`` removes that column from the log."""
    root.mkdir(parents=True, exist_ok=True)
    n = 6
    log = pd.DataFrame(
        {
            "user_id": [0, 1, 0, 2, 1, 0],
            "video_id": [10, 11, 12, 10, 13, 11],
            "date": 20220425,
            "hourmin": np.zeros(n, dtype=np.int32),
            "time_ms": 1_650_812_741_436 + np.array([5, 1, 9, 3, 7, 2]) * 60_000,
            **{
                c: pd.array(v, dtype="Int64")
                for c, v in {
                    "is_click": [1, 0, 1, 1, 0, 1],
                    "is_like": [1, 0, 0, 0, 0, 0],
                    "is_follow": [0, 0, 0, 1, 0, 0],
                    "is_comment": [0] * n,
                    "is_forward": [0] * n,
                    "is_hate": [0, 1, 0, 0, 0, 0],
                    "long_view": [1, 0, 0, 1, 0, 1],
                    "play_time_ms": [60_000, 300, 2_000, 9_000, 100, 30_000],
                    "duration_ms": [50_000, 12_000, 0, 50_000, 8_000, 12_000],  # 0: unknown
                    "profile_stay_time": [0] * n,
                    "is_rand": [0, 0, 0, 0, 1, 0],
                    "tab": [1, 1, 0, 4, 1, 1],
                }.items()
            },
        }
    )
    log.drop(columns=[drop] if drop else []).to_parquet(
        root / "standard_log_20220425_20220430.parquet"
    )
    (root / "video_features_basic_pure.csv.gz").write_bytes(
        gzip.compress(
            b"video_id,author_id,video_type,upload_dt,upload_type,visible_status,video_duration,"
            b"server_width,server_height,music_id,music_type,tag\n"
            b"10,7349781,NORMAL,2022-04-10,LongImport,0.0,50000.0,720.0,1280.0,915,9.0,39\n"
            b'11,2103883,NORMAL,2022-04-10,Kmovie,0.0,12000.0,720.0,1280.0,635,9.0,"39,68"\n'
            b"12,5067285,AD,2022-04-09,ShortImport,0.0,,720.0,1280.0,661,,\n"
            b"13,5067285,NORMAL,2022-04-01,Web,0.0,8000.0,1080.0,1920.0,661,4.0,3\n"
        )
    )
    (root / "user_features_pure.csv.gz").write_bytes(
        gzip.compress(
            b"user_id,user_active_degree,is_lowactive_period,is_live_streamer,is_video_author,"
            b"follow_user_num,follow_user_num_range,fans_user_num,fans_user_num_range,"
            b"friend_user_num,friend_user_num_range,register_days,register_days_range,"
            b"onehot_feat0,onehot_feat4\n"
            b'0,full_active,0,1,1,514,500+,150,"[100,1k)",34,"[30,60)",799,730+,1,1.0\n'
            b'1,high_active,0,-124,0,8,"(0,10]",26,"[10,100)",3,"[1,5)",231,181-365,0,\n'
            b"2,UNKNOWN,0,-124,1,0,0,0,0,0,0,12,0-15,1,2.0\n"
        )
    )
    seqs = pd.DataFrame(
        {
            "user_id": [0, 3],
            "history_len": [3, 1],
            "last_time_ms": [1_650_615_878_629, 1_650_352_792_048],
            "watch_seq": [[7, 8, 9], [4]],
            "like_seq": [[8], []],
            "long_watch_seq": [[9, 8], [4]],
        }
    )
    seqs.to_parquet(root / "user_sequences.parquet")
    return root


def write_microlens(root: Path, pairs: bytes | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    pairs = pairs or b"1\t19 634 15\r\n2\t166 19\r\n3\t634\r\n"
    (root / "MicroLens-50k_pairs.tsv.gz").write_bytes(gzip.compress(pairs))
    (root / "MicroLens-50k_titles.csv.gz").write_bytes(
        gzip.compress(
            b"item,title\n"
            b'19,"Gu long song gaga bad, even so. # comic # Two Yuan # My destiny villain"\n'
            b"634,what are you!! # Nanze # wild area Chen Haonan\n"
            b"15,Truth or Dare third brother said the wrong thing\n"
        )
    )
    return root


# --- canonical tables ------------------------------------------------------------------------


def test_validate_casts_compatible_types_and_keeps_extras() -> None:
    df = pd.DataFrame(
        {
            "user_id": pd.array([1, 2], dtype="Int64"),
            "item_id": [3.0, 4.0],
            "ts": pd.to_datetime([1_650_812_741_436, None], unit="ms"),
            "event": ["impression", "view"],
            "clicked": [1, 0],
            "note": ["a", "b"],
        }
    )
    table = validate("interactions", df, "x.parquet")
    assert table.column_names == ["user_id", "item_id", "ts", "event", "clicked", "note"]
    assert table.schema.field("ts").type == TS
    assert table.column("clicked").to_pylist() == [True, False]
    assert table.column("item_id").type == pa.int64()


@pytest.mark.parametrize(
    ("change", "column"),
    [
        ({"user_id": ["a", "b"]}, "user_id"),
        ({"item_id": [1.5, 2.0]}, "item_id"),
        ({"clicked": [2, 0]}, "clicked"),
        ({"event": ["impression", "teleport"]}, "event"),
        ({"item_id": [1, None]}, "item_id"),
    ],
)
def test_validate_names_file_and_column(change: dict, column: str) -> None:
    df = pd.DataFrame({"user_id": [1, 2], "item_id": [3, 4], "ts": pd.NaT, "event": "view"})
    df["clicked"] = [1, 0]
    with pytest.raises(DataError, match=rf"^x\.parquet .*'{column}'"):
        validate("interactions", df.assign(**change), "x.parquet")
    with pytest.raises(DataError, match="missing column 'ts'"):
        validate("interactions", df.drop(columns="ts"), "x.parquet")


def test_validate_rejects_duplicate_keys() -> None:
    with pytest.raises(DataError, match="item_id.*duplicate"):
        validate(
            "items",
            pd.DataFrame(
                {
                    "item_id": [1, 1],
                    "author_id": [2, 2],
                    "title": None,
                    "duration_ms": None,
                    "upload_ts": None,
                }
            ),
            "items.csv",
        )


# --- synthetic world -------------------------------------------------------------------------


def test_synth_is_deterministic_and_canonical() -> None:
    a, b = generate(SMALL), generate(SMALL)
    for name, df in a.items():
        pd.testing.assert_frame_equal(df, b[name])
        validate(name, df, "synth")
    other = generate(SynthConfig(n_users=300, n_videos=400, days=3, seed=8))
    assert not other["interactions"].equals(a["interactions"])
    inter = a["interactions"]
    assert inter["ts"].is_monotonic_increasing
    assert (inter["event"] == "impression").all()
    items = a["items"].set_index("item_id")
    uploaded = items.loc[inter["item_id"], "upload_ts"].to_numpy()
    assert (uploaded < inter["ts"].to_numpy()).all(), "a video is shown before its upload"
    assert items["title"].str.contains("#").all() and items["tags"].map(len).min() >= 1
    assert set(items["category"]) <= set(TOPICS)
    assert items["duration_ms"].between(5_000, 180_000).all()


def test_synth_rates_follow_affinity() -> None:
    world = generate(SynthConfig(n_users=1_000, n_videos=1_500, days=4, seed=1))
    inter, items, users = world["interactions"], world["items"], world["users"]
    rates = inter[["clicked", "long_view", "liked", "followed", "shared"]].mean()
    assert 0.1 < rates["clicked"] < 0.9
    assert rates["liked"] < rates["clicked"] and rates["followed"] < rates["liked"]
    assert 0.05 < inter["is_rand"].mean() < 0.15
    favourite = np.stack(users["latent_taste"].to_numpy()).argmax(1)
    topic = items["category"].map({t: i for i, t in enumerate(TOPICS)}).to_numpy()
    on_favourite = topic[inter["item_id"]] == favourite[inter["user_id"]]
    fav_ctr, other_ctr = (
        inter["clicked"][on_favourite].mean(),
        inter["clicked"][~on_favourite].mean(),
    )
    assert fav_ctr > other_ctr + 0.15, (fav_ctr, other_ctr)
    # Random exposures are not personalised: they click less than the rest.
    assert inter["clicked"][inter["is_rand"]].mean() < inter["clicked"][~inter["is_rand"]].mean()


def test_synth_follows_are_consistent() -> None:
    world = generate(SMALL)
    follows, users, items = world["follows"], world["users"], world["items"]
    assert not follows.duplicated(["user_id", "author_id"]).any()
    assert (follows["user_id"] != follows["author_id"]).all()
    creators = set(users.loc[users["is_creator"], "user_id"])
    assert set(follows["author_id"]) <= creators and set(items["author_id"]) <= creators
    assert users["follow_count"].sum() == len(follows)
    inter = world["interactions"]
    new = inter[inter["followed"]].merge(items[["item_id", "author_id"]], on="item_id")
    pairs = set(zip(follows["user_id"], follows["author_id"], strict=True))
    assert set(zip(new["user_id"], new["author_id"], strict=True)) <= pairs


def test_synth_config_rejects_impossible_worlds() -> None:
    with pytest.raises(ValueError, match="n_topics"):
        SynthConfig(n_topics=len(TOPICS) + 1)
    with pytest.raises(ValueError, match="n_creators"):
        SynthConfig(n_users=5, n_creators=6)


# --- adapters -----------------------------------------------------------------------------------


def test_kuairand_adapter(tmp_path: Path) -> None:
    tables = kuairand.load(write_kuairand(tmp_path / "kuairand"))
    path = write_dataset("kr", tables, "kuairand test", root=tmp_path / "data")
    ds = load_dataset(path)
    inter = ds.interactions
    assert len(inter) == 6 and inter["ts"].is_monotonic_increasing
    assert str(inter["ts"].dt.tz) == "UTC" and (inter["event"] == "impression").all()
    first = inter.iloc[0].to_dict()  # the earliest: user 1 skipped video 11 and hated it
    assert first | {"user_id": 1, "item_id": 11, "clicked": False, "hated": True} == first
    assert inter["watch_ms"].sum() == 101_400 and inter["is_rand"].sum() == 1
    assert inter["duration_ms"].isna().tolist() == (inter["item_id"] == 12).tolist()
    items = ds.items.set_index("item_id")
    assert list(items.loc[11, "tags"]) == ["39", "68"] and items.loc[11, "category"] == "39"
    assert items["title"].isna().all() and pd.isna(items.loc[12, "duration_ms"])
    assert items.loc[10, "upload_ts"] == pd.Timestamp("2022-04-10", tz="UTC")
    assert (items.loc[13, "width"], items.loc[13, "music_id"]) == (1080, 661)  # extra kept
    users = ds.users.set_index("user_id")
    assert users.loc[0, "activity"] == "full_active" and users.loc[0, "follow_count"] == 514
    assert bool(users.loc[1, "is_creator"]) is False and users.loc[0, "register_days"] == 799
    hist = ds.history
    views = hist[(hist["user_id"] == 0) & (hist["event"] == "view")]
    assert views["item_id"].tolist() == [7, 8, 9] and views["seq"].tolist() == [0, 1, 2]
    assert hist["ts"].isna().all() and set(hist["event"]) == {"view", "like", "long_view"}
    assert ds.meta["rows"] == {"interactions": 6, "items": 4, "users": 3, "history": 8}


def test_kuairand_missing_column_fails_and_writes_nothing(tmp_path: Path) -> None:
    root = write_kuairand(tmp_path / "kuairand", drop="is_click")
    with pytest.raises(DataError, match=r"standard_log_20220425_20220430\.parquet.*'is_click'"):
        write_dataset("kr", kuairand.load(root), "kuairand test", root=tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_kuairand_wrong_type_names_file_and_column(tmp_path: Path) -> None:
    root = write_kuairand(tmp_path / "kuairand")
    bad = pd.read_csv(root / "user_features_pure.csv.gz").astype({"user_id": str})
    bad.loc[0, "user_id"] = "u0"
    bad.to_csv(root / "user_features_pure.csv.gz", index=False)
    with pytest.raises(DataError, match=r"user_features_pure\.csv\.gz: column 'user_id'"):
        kuairand.load(root)


def test_microlens_adapter(tmp_path: Path) -> None:
    tables = microlens.load(write_microlens(tmp_path / "ml"))
    ds = load_dataset(write_dataset("ml", tables, "microlens test", root=tmp_path / "data"))
    inter = ds.interactions
    assert inter["user_id"].tolist() == [1, 1, 1, 2, 2, 3]
    assert inter["item_id"].tolist() == [19, 634, 15, 166, 19, 634]
    assert inter["seq"].tolist() == [0, 1, 2, 0, 1, 0]
    assert inter["ts"].isna().all() and (inter["event"] == "view").all()
    items = ds.items.set_index("item_id")
    assert list(items.loc[19, "tags"]) == ["comic", "two yuan", "my destiny villain"]
    assert list(items.loc[15, "tags"]) == []
    assert pd.isna(items.loc[166, "title"]), "a watched item without a title still gets a row"
    assert sorted(ds.users["user_id"]) == [1, 2, 3]


def test_microlens_malformed_line(tmp_path: Path) -> None:
    root = write_microlens(tmp_path / "ml", pairs=b"1\t19 634\r\n2 166 19\r\n")
    with pytest.raises(DataError, match=r"pairs\.tsv\.gz: line 2"):
        microlens.load(root)


def test_hashtags() -> None:
    assert hashtags("Mini World! # Mini-world # Mini-world minigame") == [
        "mini-world",
        "mini-world minigame",
    ]
    assert hashtags("no tags here") == []
    assert hashtags("# gather it photosynthesis creator you can always believe it") == []
    assert hashtags("#Marvel #4k60 frames! and more # marvel") == ["marvel", "4k60 frames"]


# --- store and CLI -----------------------------------------------------------------------------


def test_failed_import_keeps_previous_data_set(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_dataset("s", generate(SMALL), "synth", root=root)
    before = (root / "s" / "interactions.parquet").read_bytes()
    broken = generate(SMALL)
    broken["items"] = broken["items"].drop(columns="title")
    with pytest.raises(DataError, match="'title'"):
        write_dataset("s", broken, "synth", root=root)
    assert (root / "s" / "interactions.parquet").read_bytes() == before
    assert sorted(p.name for p in root.iterdir()) == ["s"], "no temporary directory is left"


def test_cli_synth_describe_and_errors(settings: Settings, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["data", "synth", "--users", "200", "--videos", "300", "--days", "2", "--name", "tiny"]
    )
    assert result.exit_code == 0, result.output
    assert (settings.data_dir / "tiny" / "meta.json").is_file()
    assert "tiny" in result.stdout and "clicked" in result.stdout

    result = runner.invoke(app, ["data", "describe"])
    assert result.exit_code == 0 and "tiny" in result.stdout and "impression" in result.stdout

    result = runner.invoke(app, ["data", "synth", "--topics", "99"])
    assert result.exit_code == 2 and "n_topics" in result.stderr

    result = runner.invoke(app, ["data", "describe", "nope"])
    assert result.exit_code == 2 and "tiny" in result.stderr  # lists what there is


def test_cli_imports(settings: Settings, tmp_path: Path) -> None:
    ml = write_microlens(tmp_path / "ml")
    result = runner.invoke(app, ["data", "import", "microlens", str(ml)])
    assert result.exit_code == 0, result.output
    assert "no timestamps" in result.stdout

    kr = write_kuairand(tmp_path / "kr", drop="time_ms")
    result = runner.invoke(app, ["data", "import", "kuairand", str(kr), "--name", "kr"])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and "standard_log_20220425_20220430.parquet" in line
    assert "'time_ms'" in line
    assert not (settings.data_dir / "kr").exists()

    result = runner.invoke(app, ["data", "import", "kuairand", str(tmp_path / "absent")])
    assert result.exit_code == 2 and "absent" in result.stderr
