"""qpm.io: the one atomic writer, strict JSON and the guarded .npz reader."""

from __future__ import annotations

import json
import os
import stat
import zipfile

import numpy as np
import pytest
from badfiles import header_only, npy_bytes

from qpm import io
from qpm.errors import QPMError


def test_atomic_write_follows_the_umask_and_leaves_no_temporary(tmp_path):
    old = os.umask(0o027)
    try:
        path = io.write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    os.umask(0o022)
    try:
        assert stat.S_IMODE(io.save_npz(tmp_path / "b.npz", a=np.ones(2)).stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_failed_write_keeps_the_old_file(tmp_path):
    path = io.write_text(tmp_path / "f.txt", "old")

    def boom(fh):
        fh.write("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        io.atomic_write(path, boom, mode="w")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_temp_names_are_unique_and_recognised(tmp_path):
    seen = []

    def record(fh):  # the temporary is the only other file while writing
        seen.extend(p.name for p in tmp_path.iterdir() if p.name != "x.json")

    io.atomic_write(tmp_path / "x.json", record, "w")
    io.atomic_write(tmp_path / "x.json", record, "w")
    assert len(seen) == 2
    assert seen[0] != seen[1] and all(io.is_temp_name(n) for n in seen)
    assert not io.is_temp_name("x.json") and not io.is_temp_name(".hidden")


def test_json_is_strict_both_ways(tmp_path):
    with pytest.raises(ValueError, match=r"\$\['a'\]\[1\]"):
        io.write_json(tmp_path / "n.json", {"a": [1.0, float("nan")]})
    assert not (tmp_path / "n.json").exists()
    (tmp_path / "m.json").write_text('{"beta": NaN}')
    with pytest.raises(io.ArtifactError, match="NaN is not allowed"):
        io.read_json(tmp_path / "m.json")
    (tmp_path / "i.json").write_text('[Infinity]')
    with pytest.raises(io.ArtifactError):
        io.read_json(tmp_path / "i.json")


def test_read_npz_loads_only_known_keys(tmp_path, monkeypatch):
    path = tmp_path / "a.npz"
    np.savez(path, a=np.arange(3), other=np.ones(5), obj=np.array([None], dtype=object))
    # An unknown object array is never read (so never refused either).
    out = io.read_npz(path, ("a",))
    assert list(out) == ["a"] and out["a"].tolist() == [0, 1, 2]
    with pytest.raises(QPMError, match="object array.*pickle"):
        io.read_npz(path, ("a", "obj"))


def test_read_npz_refuses_complex_and_structured(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, a=np.ones(3) + 1j)
    with pytest.raises(QPMError, match="complex array"):
        io.read_npz(path, ("a",))
    np.savez(path, a=np.zeros(2, dtype=[("x", "f8"), ("y", "i4")]))
    with pytest.raises(QPMError, match="structured"):
        io.read_npz(path, ("a",))


def test_a_header_declaring_more_than_the_member_holds_allocates_nothing(tmp_path, monkeypatch):
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as zf:  # 10^12 elements declared, 16 bytes present
        zf.writestr("A.npy", header_only((10**6, 10**6)) + b"\0" * 16)
    monkeypatch.setattr(np, "empty", lambda *a, **k: pytest.fail("allocated"))
    with pytest.raises(QPMError, match="declares 8000000000000 bytes"):
        io.read_npz(path, ("A",))


def test_read_npz_refuses_what_does_not_fit_in_memory(tmp_path, monkeypatch):
    path = tmp_path / "big.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("A.npy", npy_bytes(np.zeros((512, 512))))  # 2 MiB, a small zip bomb
    monkeypatch.setattr("qpm.memory.available_memory", lambda: 1 << 20)
    monkeypatch.setattr(np, "empty", lambda *a, **k: pytest.fail("allocated"))
    with pytest.raises(QPMError, match=r"needs 2\.0 MiB of memory, but only 1\.0 MiB"):
        io.read_npz(path, ("A",))


def test_trailing_bytes_and_crc_errors_are_corrupt(tmp_path):
    path = tmp_path / "t.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("A.npy", npy_bytes(np.ones(4)) + b"extra")
    with pytest.raises(QPMError, match="corrupt"):
        io.read_npz(path, ("A",))
    good = tmp_path / "g.npz"
    np.savez(good, A=np.arange(1000.0))
    data = bytearray(good.read_bytes())
    data[400] ^= 0xFF  # inside the stored array data
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(QPMError, match="corrupt"):
        io.read_npz(bad, ("A",))


def test_fortran_order_big_endian_strings_and_scalars_round_trip(tmp_path):
    path = tmp_path / "r.npz"
    a = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    np.savez(path, a=a, be=np.arange(3, dtype=">i4"), s=np.array(["x", "Ñandú"]), v=np.array(1))
    out = io.read_npz(path, ("a", "be", "s", "v"))
    assert np.array_equal(out["a"], a) and out["be"].tolist() == [0, 1, 2]
    assert out["s"].tolist() == ["x", "Ñandú"] and out["v"].shape == () and int(out["v"]) == 1


def test_save_npz_writes_what_numpy_savez_writes(tmp_path):
    big = np.random.default_rng(0).normal(size=(1100, 1000))  # 8.8 MB: written in pieces
    arrays = {"c": np.arange(6.0).reshape(2, 3), "f": np.asfortranarray(big), "big": big,
              "strided": big[::3, ::7], "be": np.arange(3, dtype=">i4"), "v": np.array(1),
              "s": np.array(["x", "Ñandú"]), "empty": np.zeros((0, 4)), "b": np.ones(2, bool)}
    ours, theirs = io.save_npz(tmp_path / "o.npz", **arrays), tmp_path / "t.npz"
    np.savez(theirs, **arrays)
    with zipfile.ZipFile(ours) as zo, zipfile.ZipFile(theirs) as zt:
        assert [i.filename for i in zo.infolist()] == [i.filename for i in zt.infolist()]
        for a, b in zip(zo.infolist(), zt.infolist(), strict=True):
            assert (a.CRC, a.file_size, zo.read(a)) == (b.CRC, b.file_size, zt.read(b))
    out = io.read_npz(ours, tuple(arrays))
    assert all(np.array_equal(out[k], v) and out[k].dtype == v.dtype for k, v in arrays.items())
    assert out["f"].flags.f_contiguous and out["c"].flags.writeable


def test_a_flipped_byte_deep_in_a_large_stored_array_is_corrupt(tmp_path):
    path = io.save_npz(tmp_path / "a.npz", A=np.arange(600_000.0))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(QPMError, match="corrupt"):
        io.read_npz(path, ("A",))


def test_check_callback_runs_before_reading(tmp_path):
    path = tmp_path / "s.npz"
    np.savez(path, A=np.ones((3, 2)), b=np.ones(4))

    def check(headers):
        assert headers["A"].shape == (3, 2)
        raise QPMError("b does not fit A", "fix")

    with pytest.raises(QPMError, match="b does not fit A"):
        io.read_npz(path, ("A", "b"), check=check)


def test_strict_json_written_by_result_and_read_back(tmp_path):
    from qpm.assignment.result import AssignmentResult

    r = AssignmentResult(termination="heuristic", solver="greedy", objective=1.5,
                         selected_features=[0], matrix=np.array([[1]], dtype=np.uint8))
    r.save_json(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["objective"] == 1.5
    assert AssignmentResult.load_json(tmp_path / "r.json").assignment == {0: [0]}
