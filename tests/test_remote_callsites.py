"""URLs at the remaining call sites: open_table, loaders, torch/jax datasets, catalog.build, the CLI,
to_ome_tiff / to_ome_zarr, and their bad-input errors (against moto on loopback, see tests/s3server.py)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import omeframe
from omeframe.errors import RemoteStorageError


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (600, 2, 64, 64), dtype=np.uint8)  # 4.9 MB incompressible


@pytest.mark.parametrize("compression", ["zstd", None])
def test_open_table_parquet_takes_read_only_their_rows(bucket, crops, compression) -> None:  # type: ignore[no-untyped-def]
    url, opts, server = bucket
    path = f"{url}/crops.parquet"
    omeframe.write_table(path, crops, dim_order="CYX", compression=compression,
                         columns={"well": [f"w{i % 7}" for i in range(len(crops))]}, storage_options=opts)
    size = omeframe.storage.remote.RemoteStore(url, opts).size("crops.parquet")
    server.counts.reset()
    t = omeframe.open_table(path, storage_options=opts)
    assert t.indexed and len(t) == len(crops) and t.column == "ome_arrow"
    opened = server.counts.bytes()
    assert opened <= omeframe.formats.record.image_table.REMOTE_TAIL_BYTES  # the tail: footer + pixel index
    server.counts.reset()
    got = t.to_numpy([590, 3, 4])
    np.testing.assert_array_equal(got, crops[[590, 3, 4]])
    assert server.counts.bytes() < size // 10  # three rows' chunks (or their pages), not the table
    rows = t.take([10, 2], columns=["well", t.column])
    assert rows["well"].to_pylist() == ["w3", "w2"]
    np.testing.assert_array_equal(omeframe.OMEArrow(rows[t.column][0]).export("numpy")[0, :, 0], crops[10])
    # pickles as its URL and options; the copy reopens by ranged reads
    copy = pickle.loads(pickle.dumps(t))
    np.testing.assert_array_equal(copy.to_numpy([7]), crops[[7]])
    assert "stored" in t._repr_html_()


def test_open_table_vortex_and_unindexed_parquet(bucket, crops) -> None:  # type: ignore[no-untyped-def]
    url, opts, server = bucket
    small = crops[:40]
    omeframe.write_table(f"{url}/c.vortex", small, dim_order="CYX", format="vortex", storage_options=opts)
    server.counts.reset()
    t = omeframe.open_table(f"{url}/c.vortex", storage_options=opts)
    assert len(t) == 40 and t.format == "vortex" and not t.indexed
    np.testing.assert_array_equal(t.to_numpy([39, 0]), small[[39, 0]])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(t)).to_numpy(), small)
    # a table without pixel index (and without suffix): format from the magic bytes, row-group reads
    omeframe.write_table(f"{url}/plain", small, dim_order="CYX", format="parquet", storage_options=opts)
    p = omeframe.open_table(f"{url}/plain", use_index=False, storage_options=opts)
    assert p.format == "parquet" and not p.indexed
    np.testing.assert_array_equal(p.to_numpy([5, 1]), small[[5, 1]])
    assert p.read(["ome_arrow"]).num_rows == 40


def test_open_table_bad_urls(bucket) -> None:  # type: ignore[no-untyped-def]
    url, opts, server = bucket
    with pytest.raises(FileNotFoundError, match=r"nope\.parquet"):
        omeframe.open_table(f"{url}/nope.parquet", storage_options=opts)
    with pytest.raises(ValueError, match="unknown URL scheme 'ftp'"):
        omeframe.open_table("ftp://host/x.parquet")
    with pytest.raises(ValueError, match="names no bucket"):
        omeframe.open_table("s3://", storage_options=opts)
    with pytest.raises(FileNotFoundError, match="no-such-bucket-x1"):
        omeframe.open_table("s3://no-such-bucket-x1/t.parquet", storage_options=opts)
    server.faults.status(403, 1, match="/denied.parquet")
    with pytest.raises(RemoteStorageError, match=r"denied\.parquet.*HTTP 403.*credentials"):
        omeframe.open_table(f"{url}/denied.parquet", storage_options=opts)
    omeframe.storage.remote.RemoteStore(url, opts).put("junk.bin", b"0123456789abcdef")
    with pytest.raises(omeframe.errors.CorruptFileError, match="neither a Parquet nor a Vortex"):
        omeframe.open_table(f"{url}/junk.bin", storage_options=opts)
    with pytest.raises(ValueError, match="storage_options apply to URLs only"):
        omeframe.open_table("local.parquet", storage_options={"anon": True})


def _put_tiff(url: str, opts: dict, name: str, arr: np.ndarray, **kw) -> str:  # type: ignore[no-untyped-def,type-arg]
    import io

    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kw)
    omeframe.storage.remote.RemoteStore(url, opts).put(name, buf.getvalue())
    return f"{url}/{name}"


def test_loaders_on_urls_pickle_and_reopen(bucket) -> None:  # type: ignore[no-untyped-def]
    import zarr

    from omeframe.loaders import load_iter_tiff, load_tiffs, load_zarrs

    url, opts, server = bucket
    pages = np.random.default_rng(1).integers(0, 60000, (3, 384, 384), dtype=np.uint16)  # 864 KiB
    tif = _put_tiff(url, opts, "pages.tif", pages, tile=(128, 128), photometric="minisblack")
    stacks = load_tiffs([tif], "SYX", storage_options=opts)
    assert [s.origin for s in stacks] == [tif] * 3
    server.counts.reset()
    np.testing.assert_array_equal(stacks[2].read(y=(0, 100), x=(200, 250))[0, 0, 0], pages[2, :100, 200:250])
    assert 0 < server.counts.bytes() < pages.nbytes // 8  # one tile (and the IFDs), not the object
    copy = pickle.loads(pickle.dumps(stacks[1]))  # reopened by URL + options
    np.testing.assert_array_equal(copy.to_numpy(), pages[1])
    whole = load_tiffs(tif, "CYX", storage_options=opts)[0]
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(whole)).to_numpy(), pages)
    assert next(load_iter_tiff(tif, "ZYX", storage_options=opts)).shape == (1, 1, 3, 384, 384)
    # zarr: a plain array inside a store, through zarr's FsspecStore
    arr = np.arange(2 * 48 * 40, dtype=np.uint8).reshape(2, 48, 40)
    root = zarr.open_group(zarr.storage.FsspecStore.from_url(f"{url}/s.zarr", storage_options=opts), mode="w")
    root.create_array("g/a", data=arr, chunks=(1, 16, 16))
    zs = load_zarrs(f"{url}/s.zarr/g/a", "SYX", storage_options=opts)
    assert len(zs) == 2 and zs[1].origin == f"{url}/s.zarr/g/a"
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(zs[1])).to_numpy(), arr[1])
    with pytest.raises(FileNotFoundError, match="has no node 'g/b'"):
        load_zarrs(f"{url}/s.zarr/g/b", "YX", storage_options=opts)
    with pytest.raises(FileNotFoundError, match=r"missing\.tif"):
        load_tiffs(f"{url}/missing.tif", "YX", storage_options=opts)
    with pytest.raises(ValueError, match="storage_options apply to URLs only"):
        load_tiffs("local.tif", "YX", storage_options=opts)


def test_torch_and_jax_datasets_on_urls(bucket, crops, torch, jax) -> None:  # type: ignore[no-untyped-def]
    from omeframe.jax import batches
    from omeframe.torch import DatasetPatchDataset, ImageTableDataset

    url, opts, server = bucket
    small = crops[:50]
    path = f"{url}/t.parquet"
    omeframe.write_table(path, small, dim_order="CYX", columns={"y": list(range(50))}, storage_options=opts)
    ds = ImageTableDataset(path, target="y", storage_options=opts)
    x, y = ds.__getitems__([4, 40])
    np.testing.assert_array_equal(x.numpy(), small[[4, 40]])
    copy = pickle.loads(pickle.dumps(ds))  # what a spawn-started DataLoader worker receives
    np.testing.assert_array_equal(copy[7][0].numpy(), small[7])
    got = np.concatenate([np.asarray(b) for b in batches(path, 16, storage_options=opts)])
    np.testing.assert_array_equal(got, small)
    img = np.arange(2 * 96 * 96, dtype=np.uint16).reshape(1, 2, 1, 96, 96)
    omeframe.write_dataset([img], f"{url}/ds", dim_order="TCZYX", image_ids=["a"], storage_options=opts)
    patches = DatasetPatchDataset(f"{url}/ds", patch_shape=(32, 32), stride=(32, 32), storage_options=opts)
    p = pickle.loads(pickle.dumps(patches))[4]
    t, z, yy, xx = p["origin"].tolist()
    np.testing.assert_array_equal(p["image"].numpy(), img[0, :, 0, yy : yy + 32, xx : xx + 32])


def test_to_ome_tiff_and_zarr_upload_then_publish(bucket) -> None:  # type: ignore[no-untyped-def]
    url, opts, server = bucket
    img = np.arange(2 * 3 * 80 * 96, dtype=np.uint16).reshape(2, 3, 1, 80, 96)
    tif = f"{url}/out/a.ome.tif"
    server.counts.reset()
    assert omeframe.to_ome_tiff(img, tif, storage_options=opts) == tif
    assert server.counts.requests(method="PUT") == 1  # the finished file, in one request
    back = omeframe.scan(tif, storage_options=opts).export("numpy")
    np.testing.assert_array_equal(back, img)
    with pytest.raises(FileExistsError, match=r"a\.ome\.tif"):
        omeframe.to_ome_tiff(img, tif, storage_options=opts)
    # a failed upload leaves the key as it was (here: absent)
    server.faults.status(403, 1, match="/out/b.ome.tif")
    with pytest.raises(RemoteStorageError, match=r"b\.ome\.tif.*HTTP 403"):
        omeframe.to_ome_tiff(img, f"{url}/out/b.ome.tif", storage_options=opts)
    assert not omeframe.storage.remote.RemoteStore(f"{url}/out", opts).exists("b.ome.tif")

    zurl = f"{url}/out/a.ome.zarr"
    server.counts.reset()
    assert omeframe.to_ome_zarr(img, zurl, chunks=(1, 1, 1, 40, 48), multiscale_levels=2,
                                storage_options=opts) == zurl
    puts = [p for m, p, *_ in server.counts.log if m == "PUT"]
    assert puts[-1].endswith("/a.ome.zarr/zarr.json")  # the root group, which publishes the image, last
    np.testing.assert_array_equal(omeframe.scan(zurl, storage_options=opts).export("numpy"), img)
    with pytest.raises(FileExistsError, match="already holds a zarr store"):
        omeframe.to_ome_zarr(img, zurl, storage_options=opts)
    small = img[:1, :1]
    omeframe.to_ome_zarr(small, zurl, overwrite=True, storage_options=opts)  # one level: level 1 must go
    store = omeframe.storage.remote.RemoteStore(zurl, opts)
    assert store.list("") == ["0", "zarr.json"]
    np.testing.assert_array_equal(omeframe.scan(zurl, storage_options=opts).export("numpy"), small)
    # a failing upload publishes nothing
    server.faults.status(403, 1, match="/c.ome.zarr/0/")
    with pytest.raises(RemoteStorageError, match="HTTP 403"):
        omeframe.to_ome_zarr(img, f"{url}/out/c.ome.zarr", storage_options=opts)
    assert not omeframe.storage.remote.RemoteStore(f"{url}/out/c.ome.zarr", opts).exists("zarr.json")


def test_cli_on_urls(bucket, crops, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from omeframe.cli import main

    url, opts, server = bucket
    so = [f"--storage-option=endpoint_url={opts['endpoint_url']}"]
    table = f"{url}/cli/t.parquet"
    omeframe.write_table(table, crops[:20], dim_order="CYX", columns={"n": list(range(20))}, storage_options=opts)
    img = np.arange(2 * 64 * 64, dtype=np.uint16).reshape(2, 64, 64)
    omeframe.write_dataset(img, f"{url}/cli/ds", image_ids=["a"], dim_order="CYX", storage_options=opts)

    assert main(["info", table, "--rows", "1", *so]) == 0
    out = capsys.readouterr().out
    assert "20 rows with a pixel index" in out and "'n'" in out
    assert main(["info", f"{url}/cli/ds", *so]) == 0
    assert "dataset" in capsys.readouterr().out
    assert main(["verify", f"{url}/cli/ds", *so]) == 0
    assert main(["verify", table, *so]) == 0
    assert "20 records decode" in capsys.readouterr().out
    assert main(["sql", "SELECT sum(n) AS s FROM t", "--table", f"t={table}", "--format", "csv", *so]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "190"
    # remote source -> local and remote outputs (uploaded whole)
    assert main(["export", f"{url}/cli/ds", str(tmp_path / "a.npy"), "--image-id", "a", *so]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy")[0, :, 0], img)
    assert main(["export", table, f"{url}/cli/row3.npy", "--row", "3", *so]) == 0
    f = omeframe.storage.remote.open_remote_file(f"{url}/cli/row3.npy", opts)
    import io

    np.testing.assert_array_equal(np.load(io.BytesIO(f.read_range(0, f.size)))[0, :, 0], crops[3])
    assert main(["export", f"{url}/cli/ds", f"{url}/cli/a.ome.zarr", "--roi", "0,0,32,16", *so]) == 0
    back = omeframe.scan(f"{url}/cli/a.ome.zarr", storage_options=opts).export("numpy")
    np.testing.assert_array_equal(back[0, :, 0], img[:, :16, :32])
    assert main(["export", table, f"{url}/cli/row3.npy", *so]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    # bad input: one line naming the URL
    assert main(["info", f"{url}/cli/nope.parquet", *so]) == 1
    assert "nope.parquet" in capsys.readouterr().err
    assert main(["info", "gopher://x/y"]) == 1
    assert "unknown URL scheme 'gopher'" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "a.npy"), "--storage-option", "anon=true"]) == 1
    assert "applies to URLs only" in capsys.readouterr().err
    assert main(["info", table, "--storage-option", "novalue"]) == 1
    assert "KEY=VALUE" in capsys.readouterr().err
