"""An option a call would not use is refused, never silently dropped: ``scan`` / ``OMEArrow`` options the
opened format does not read, and the options of other calls that apply only in some modes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import omeframe
import omeframe.catalog
import omeframe.registry

#: A non-default value for every option of ``omeframe.scan``.
SET = {"column_name": "image", "row_index": 1, "image_id": "b", "level": 1, "dim_order": "CZTYX", "series": 1,
       "format": "vortex"}
#: The options each kind of source reads (others set must be refused).
READS = {
    "record table": {"column_name", "row_index", "format"},
    "dataset": {"image_id", "level"},
    "tiff": {"series", "level", "format"},  # format= on a file: read it as a record table of that format
    "ome-zarr": {"level"},
    "npy": {"dim_order", "format"},
    "array": {"dim_order"},
    "record": set(),
    "Dataset": {"image_id", "level"},
    "OMEArrow": set(),
    "plan": set(),
    "zarr group": {"level"},
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("unused")
    a = np.arange(2 * 3 * 4 * 16 * 16, dtype=np.uint16).reshape(2, 3, 4, 16, 16)
    omeframe.write_table(d / "t.parquet", [a[0], a[1]], dim_order="CZYX")
    omeframe.write_dataset([a, a + 1], d / "ds", image_ids=["a", "b"])
    omeframe.to_ome_tiff(a, d / "a.ome.tif")
    omeframe.to_ome_zarr(a, d / "a.ome.zarr")
    np.save(d / "a.npy", a[0, 0])
    return {
        "record table": d / "t.parquet", "dataset": d / "ds", "tiff": d / "a.ome.tif",
        "ome-zarr": d / "a.ome.zarr", "npy": d / "a.npy", "array": a[0, 0], "record": omeframe.from_numpy(a),
        "Dataset": omeframe.open_dataset(d / "ds"), "OMEArrow": omeframe.scan(d / "a.ome.tif"),
        "plan": omeframe.scan(d / "a.ome.tif")._lazy(), "zarr group": zarr.open_group(d / "a.ome.zarr", mode="r"),
    }


@pytest.mark.parametrize("option", list(SET))
@pytest.mark.parametrize("kind", list(READS))
def test_scan_refuses_options_its_source_does_not_read(sources: dict[str, Any], kind: str, option: str) -> None:
    if option in READS[kind]:
        return  # read (its effect is tested with each format)
    with pytest.raises(ValueError, match=rf"{option}=.* appl.*; drop {option}="):
        omeframe.scan(sources[kind], **{option: SET[option]})


def test_options_a_source_reads_still_apply(sources: dict[str, Any]) -> None:
    first = omeframe.scan(sources["record table"]).export("numpy")
    second = omeframe.scan(sources["record table"], row_index=1).export("numpy")
    assert not np.array_equal(first, second)
    assert omeframe.scan(sources["dataset"], image_id="b").header.image_id == "b"
    assert omeframe.scan(sources["npy"], dim_order="ZYX").shape == (1, 1, 4, 16, 16)
    # defaults given explicitly are no options: OMEArrow.scan passes column_name and row_index always
    assert omeframe.OMEArrow.scan(sources["tiff"], column_name="ome_arrow", row_index=0).shape[1] == 3


def test_plain_zarr_arrays_take_dim_order_and_refuse_level(tmp_path: Path) -> None:
    arr = zarr.create_array(store=str(tmp_path / "plain.zarr"), shape=(8, 9), chunks=(4, 4), dtype="uint8")
    assert omeframe.scan(arr, dim_order="YX").shape == (1, 1, 1, 8, 9)
    with pytest.raises(ValueError, match="level=1 applies to OME-Zarr groups"):
        omeframe.scan(arr, level=1)


@pytest.mark.parametrize("lazy", [False, True])
def test_omearrow_refuses_options_its_data_does_not_read(sources: dict[str, Any], lazy: bool) -> None:
    with pytest.raises(ValueError, match="dim_order= does not apply to .*a.ome.tif"):
        omeframe.OMEArrow(sources["tiff"], dim_order="ZCTYX", lazy=lazy)
    with pytest.raises(ValueError, match="row_index= does not apply to .*a.ome.tif"):
        omeframe.OMEArrow(sources["tiff"], row_index=5, lazy=lazy)
    with pytest.raises(ValueError, match="dim_order= does not apply to .*t.parquet"):
        omeframe.OMEArrow(sources["record table"], dim_order="CZYX", lazy=lazy)
    with pytest.raises(ValueError, match="column_name= does not apply to a numpy array"):
        omeframe.OMEArrow(sources["array"], column_name="image", lazy=lazy)
    with pytest.raises(ValueError, match="row_index= does not apply to .*OME-Arrow record"):
        omeframe.OMEArrow(sources["record"], row_index=1, lazy=lazy)
    assert omeframe.OMEArrow(sources["record table"], row_index=1, lazy=lazy).shape[1] == 3


@pytest.mark.parametrize(("option", "value"), [("levels", "all"), ("format", "vortex"), ("mode", "append"),
                                               ("progress", True)])
def test_dataset_options_without_out_are_refused(sources: dict[str, Any], option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"{option}=.* applies to datasets, but without out="):
        omeframe.from_tiff(sources["tiff"], **{option: value})
    with pytest.raises(ValueError, match=rf"{option}=.* applies to datasets, but without out="):
        omeframe.from_ome_zarr(sources["ome-zarr"], **{option: value})


def test_labels_without_out_and_list_chunks_with_out_are_refused(sources: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="labels=True applies to datasets"):
        omeframe.from_ome_zarr(sources["ome-zarr"], labels=True)
    src = omeframe.registry.open_source(sources["tiff"])
    with pytest.raises(ValueError, match="chunk_encoding='list' applies to records"):
        omeframe.ingest_source(src, out=tmp_path / "ds", chunk_encoding="list")
    assert not (tmp_path / "ds").exists()
    assert omeframe.ingest_source(src, chunk_encoding="list") is not None  # records take it


def test_seed_without_shuffle_is_refused(sources: dict[str, Any]) -> None:
    from omeframe.jax import batches as jax_batches
    with pytest.raises(ValueError, match="seed= and epoch= apply to shuffled batches"):
        next(jax_batches(sources["record table"], 1, seed=3, dims="CZYX"))
    with pytest.raises(ValueError, match="seed= and epoch= apply to shuffled batches"):
        next(jax_batches(sources["record table"], 1, epoch=2, dims="CZYX"))


def test_torch_seed_without_shuffle_is_refused(sources: dict[str, Any], torch: Any) -> None:
    import omeframe.torch

    with pytest.raises(ValueError, match="seed= applies to shuffled epochs"):
        omeframe.torch.ImageTableIterableDataset(sources["record table"], shuffle=False, seed=1)


def test_polars_scan_of_a_dataset_refuses_another_format(sources: dict[str, Any]) -> None:
    import omeframe.polars

    with pytest.raises(ValueError, match="dataset .* is parquet"):
        omeframe.polars.scan(sources["dataset"], format="vortex")
    assert omeframe.polars.scan(sources["dataset"], format="parquet").collect().height == 2


def test_crop_labels_without_masks_are_refused() -> None:
    img = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    lab = np.zeros((64, 64), np.uint8)
    lab[10:20, 30:36] = 1
    with pytest.raises(ValueError, match="labels= are the label images of masks"):
        omeframe.crop_objects(img, omeframe.shapes_from_labels(lab), size=16, labels=lab)
    assert omeframe.crop_objects(img, omeframe.shapes_from_labels(lab), size=16, labels=lab, masks=True).num_rows


def test_duckdb_checks_column_name_on_frames(sources: dict[str, Any]) -> None:
    import polars as pl
    import pyarrow.parquet as pq

    import omeframe.duckdb
    from omeframe.errors import NoOmeArrowColumnError

    frame = pl.from_arrow(pq.read_table(sources["record table"]))
    con = omeframe.duckdb.connect()
    with pytest.raises(NoOmeArrowColumnError, match="no OME-Arrow column 'image'"):
        omeframe.duckdb.register(con, "a", frame, column_name="image")
    assert omeframe.duckdb.register(con, "a", frame, column_name="ome_arrow") == ["a"]


def test_tensor_view_refuses_roi_type_without_roi_nd_and_a_loader_for_a_plan(sources: dict[str, Any]) -> None:
    rec = sources["record"]
    with pytest.raises(ValueError, match="roi_type must be one of"):
        omeframe.TensorView(rec, roi_nd=(0, 0, 4, 4), roi_type="bogus")
    with pytest.raises(ValueError, match="roi_type= says how to read roi_nd"):
        omeframe.TensorView(rec, roi_type="3d")
    with pytest.raises(ValueError, match="plane_loader= reads the planes of a record"):
        omeframe.TensorView(omeframe.scan(rec)._lazy(), plane_loader=lambda *a: None)


@pytest.mark.parametrize("write", ["dataset", "record", "table"])
def test_compression_levels_where_they_cannot_apply(tmp_path: Path, write: str) -> None:
    a = np.random.default_rng(0).integers(0, 4000, (2, 32, 32), dtype=np.uint16)

    def run(**kw: Any) -> Any:
        if write == "dataset":
            return omeframe.write_dataset(a, tmp_path / "d", dim_order="CYX", mode="overwrite", **kw).read()
        if write == "record":
            return omeframe.to_numpy(omeframe.from_numpy(a, dim_order="CYX", **kw))
        omeframe.write_table(tmp_path / "t.parquet", a[None], dim_order="CYX",
                             **{f"chunk_{k}": v for k, v in kw.items()})
        return omeframe.open_table(tmp_path / "t.parquet").to_numpy([0])

    # snappy takes no level: the default is no request (it used to fail in Arrow), another level is refused
    np.testing.assert_array_equal(np.asarray(run(compression="snappy")).reshape(a.shape), a)
    with pytest.raises(ValueError, match="snappy chunks take no compression level"):
        run(compression="snappy", compression_level=5)
    with pytest.raises(ValueError, match="compression_level=7 applies to compressed chunks"):
        run(compression=None, compression_level=7)
    np.testing.assert_array_equal(np.asarray(run(compression="gzip", compression_level=2)).reshape(a.shape), a)


def test_zarr_compressor_level_without_a_compressor_is_refused(tmp_path: Path) -> None:
    a = np.zeros((1, 1, 1, 8, 8), np.uint8)
    with pytest.raises(ValueError, match="compressor_level=19 applies to compressed chunks"):
        omeframe.to_ome_zarr(a, tmp_path / "z.zarr", compressor=None, compressor_level=19)
    omeframe.to_ome_zarr(a, tmp_path / "z.zarr", compressor=None)


def test_inline_chunk_compression_needs_bytes_encoding(sources: dict[str, Any], tmp_path: Path) -> None:
    rec = sources["record"]
    for encoding in ("existing", "list"):
        with pytest.raises(ValueError, match="inline_chunk_compression applies with inline_chunk_encoding='bytes'"):
            omeframe.to_ome_parquet(rec, tmp_path / "r.parquet", inline_chunk_encoding=encoding,
                                    inline_chunk_compression="zstd")
    listed = omeframe.from_numpy(np.arange(64, dtype=np.uint16).reshape(8, 8), chunk_encoding="list")
    omeframe.to_ome_parquet(listed, tmp_path / "r.parquet", inline_chunk_encoding="bytes",
                            inline_chunk_compression="lz4")
    back = omeframe.from_ome_parquet(tmp_path / "r.parquet", column_name="image")
    assert omeframe.to_numpy(back).reshape(8, 8).tolist() == np.arange(64).reshape(8, 8).tolist()


def test_a_catalog_refuses_another_record_column_on_resume(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "a.npy", np.arange(64, dtype=np.uint16).reshape(8, 8))
    omeframe.catalog.build(src, tmp_path / "cat", workers=1, progress=False)
    np.save(src / "b.npy", np.ones((8, 8), np.uint16))
    with pytest.raises(ValueError, match="stores its records in column 'ome_arrow'.*not 'img'"):
        omeframe.catalog.build(src, tmp_path / "cat", workers=1, progress=False, column_name="img")
    res = omeframe.catalog.build(src, tmp_path / "cat", workers=1, progress=False)
    assert res.n_ingested == 1


def test_compression_of_list_chunks_is_refused() -> None:
    a = np.arange(64, dtype=np.uint16).reshape(8, 8)
    with pytest.raises(ValueError, match="'lz4' .* applies to the byte variant only"):
        omeframe.from_numpy(a, chunk_encoding="list", compression="lz4")
    with pytest.raises(ValueError, match=r"level 9\) applies to the byte variant only"):
        omeframe.from_numpy(a, chunk_encoding="list", compression_level=9)
    src = omeframe.registry.open_source(a, dim_order="YX")
    with pytest.raises(ValueError, match="applies to the byte variant only"):
        omeframe.ingest_source(src, chunk_encoding="list", compression="gzip")
    assert omeframe.to_numpy(omeframe.from_numpy(a, chunk_encoding="list")).reshape(8, 8).tolist() == a.tolist()
