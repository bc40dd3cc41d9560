import os

from osteo_batch.archive.walk import walk


def test_every_regular_file_once_and_no_symlink_loops(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "f1").write_bytes(b"1")
    (tmp_path / "a" / "b" / "f2 odd name ü #1").write_bytes(b"2")
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")  # a cycle
    os.symlink(tmp_path / "a" / "f1", tmp_path / "a" / "f1-again")  # same file twice
    os.link(tmp_path / "a" / "f1", tmp_path / "a" / "f1-hardlink")  # and a third time
    os.symlink(tmp_path / "nowhere", tmp_path / "a" / "dangling")
    os.mkfifo(tmp_path / "a" / "fifo")
    listing = walk(tmp_path)
    names = sorted(os.path.basename(p) for p in listing.paths)
    assert names == ["f1", "f2 odd name ü #1"]
    # the dangling link and the FIFO get a row each, with a reason, and are never opened
    refused = sorted(zip((os.path.basename(p) for p in listing.refused_paths), listing.refused_reasons,
                         listing.refused_details))
    assert refused == [("dangling", "unreadable", "dangling_link"), ("fifo", "not_regular_file", "fifo")]
    assert listing.vanished == 0 and len(listing) == 4


def test_unreadable_directory_is_counted_not_fatal(tmp_path):
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "f").write_bytes(b"x")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "g").write_bytes(b"y")
    os.chmod(locked, 0)
    try:
        listing = walk(tmp_path)
    finally:
        os.chmod(locked, 0o700)
    if os.geteuid() == 0:  # root reads everything
        assert len(listing) == 2
    else:
        assert len(listing) == 1 and listing.unreadable_dirs == 1
