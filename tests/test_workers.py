"""What a cluster's workers get: cores of their own on a machine, and the bundle as the bytes of
its files (no Ray needed)."""
from edge_dm.jobs.workers import pack_bundle, pick_cores, unpack_bundle


def test_workers_on_one_machine_get_cores_of_their_own():
    assert pick_cores([0, 1, 2, 3], set(), 2) == [0, 1]
    assert pick_cores([0, 1, 2, 3], {0, 1}, 2) == [2, 3]
    assert pick_cores([0, 1, 2, 3], {0, 1, 2}, 2) is None  # not enough left: not pinned


def test_a_packed_bundle_carries_what_a_worker_runs_and_no_calibration_set(tiny_int8, tmp_path):
    bundle, _ = tiny_int8
    files = pack_bundle(bundle)
    assert "calibration.npz" not in files and ".edge-dm" not in files and "recipe.json" in files
    assert (bundle.path / "calibration.npz").exists()
    copy = unpack_bundle(files, tmp_path / "copy")
    assert copy.precision == "int8" and copy.ir().read_bytes() == bundle.ir().read_bytes()
