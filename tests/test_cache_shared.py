"""The decoded-image cache in a folder that others can write into: the cache file and its lock file are opened as
regular files only (a symbolic link is not followed, a FIFO not waited on), and a cache file is trusted only when no
one else can have written it (yours, writable by you alone), unless the folder is named as shared
(``data.decoded.cache_shared``): another user's is left alone and yours is kept in ``cache_dir/user-<uid>``."""

from __future__ import annotations

import logging
import os
import stat
import threading
from pathlib import Path

import pytest
import torch
from conftest import write_image_folder
from test_cache import cache_files, images_of

from project.data import DecodedImages, ImageFolderDataModule
from project.data import cache as cache_module
from project.data.cache import HEADER_BYTES

STRANGER = 4242
"""A user id that is not this process's (the tests that give files to it run as root)."""
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")


@pytest.fixture(autouse=True)
def console(caplog):
    """What the data modules say on the console (Lightning's rank-zero logger)."""
    caplog.set_level(logging.INFO)
    return caplog


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "images", {"a": 10, "b": 10})


def module(images: Path, cache_dir: Path, cache_shared: bool = False) -> ImageFolderDataModule:
    """A data module on ``images`` with its cache in ``cache_dir``, read from the file (not held in memory)."""
    decoded = DecodedImages(cache_dir=str(cache_dir), max_memory_mb=0, cache_shared=cache_shared)
    return ImageFolderDataModule(data_dir=str(images), decoded=decoded)


def built(images: Path, cache_dir: Path) -> Path:
    """The cache file of ``images`` in ``cache_dir``, built."""
    module(images, cache_dir).setup("fit")
    (path,) = cache_files(cache_dir)
    return path


def decoded(images: Path) -> torch.Tensor:
    """The training images as decoded without a cache: what every path must give."""
    data = ImageFolderDataModule(data_dir=str(images), decoded=DecodedImages(cache=False))
    data.setup("fit")
    return images_of(data, "train_dataloader")


def poisoned(path: Path) -> None:
    """Every pixel of the cache file at ``path`` made white, its size and header kept: nothing in it says so."""
    with path.open("r+b") as file:
        file.seek(HEADER_BYTES)
        file.write(b"\xff" * (path.stat().st_size - HEADER_BYTES))


def notes(console) -> list[str]:
    return [line for line in console.text.splitlines() if "note:" in line]


@pytest.mark.parametrize("what", ["a dangling link", "a link to a file", "a FIFO"])
def test_something_other_than_a_file_at_the_lock_files_path_is_not_written_through(what, images, tmp_path, console):
    cache_dir = tmp_path / "cache"
    path = built(images, cache_dir)
    lock = path.with_name(path.name + ".lock")
    path.unlink()
    lock.unlink()
    target = tmp_path / "elsewhere" / "target"
    target.parent.mkdir()
    if what == "a FIFO":
        os.mkfifo(lock)
    else:
        if what == "a link to a file":
            target.write_bytes(b"someone's file")
        lock.symlink_to(target)
    console.clear()
    data = module(images, cache_dir)
    data.setup("fit")
    if what == "a dangling link":
        assert not target.exists()  # it was created, at the link's target
    elif what == "a link to a file":
        assert target.read_bytes() == b"someone's file"
    kind = "a FIFO, not a regular file" if what == "a FIFO" else "a symbolic link, not followed"
    (note,) = notes(console)
    assert f"cannot be written in {cache_dir} (its lock file {lock} is {kind}): the images are decoded" in note
    assert cache_files(cache_dir) == [] and data.read_sources[images].cache is None
    assert torch.equal(images_of(data, "train_dataloader"), decoded(images))


def test_a_link_at_the_caches_path_is_not_read_through_and_a_cache_replaces_it(images, tmp_path, console):
    elsewhere = built(images, tmp_path / "elsewhere")  # a cache of the same images, kept by someone else
    poisoned(elsewhere)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    link = cache_dir / elsewhere.name
    link.symlink_to(elsewhere)
    data = module(images, cache_dir)
    data.setup("fit")
    assert f"into the cache {link} (it is a symbolic link, not followed)" in console.text
    assert not link.is_symlink() and link.is_file() and elsewhere.read_bytes()[-1] == 0xFF  # replaced, not written
    assert torch.equal(images_of(data, "train_dataloader"), decoded(images))


def test_a_fifo_at_the_caches_path_is_replaced_not_waited_on(images, tmp_path, console):
    cache_dir = tmp_path / "cache"
    path = built(images, cache_dir)
    path.unlink()
    os.mkfifo(path)
    console.clear()
    data = module(images, cache_dir)
    setup = threading.Thread(target=data.setup, args=("fit",), daemon=True)
    setup.start()
    setup.join(timeout=60)
    waited = setup.is_alive()
    if waited:  # it opened the FIFO and waits for a writer: be one, so that the thread ends
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        setup.join()
    assert not waited, "the run waited on the FIFO"
    assert f"into the cache {path} (it is a FIFO, not a regular file)" in console.text
    assert stat.S_ISREG(path.lstat().st_mode)
    assert torch.equal(images_of(data, "train_dataloader"), decoded(images))


def test_a_cache_file_others_may_write_is_rebuilt_and_a_new_one_is_yours_alone(images, tmp_path, console):
    cache_dir = tmp_path / "cache"
    previous = os.umask(0o002)  # a umask that leaves files writable by the group: the cache is written without it
    try:
        path = built(images, cache_dir)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    console.clear()
    module(images, cache_dir).setup("fit")
    assert "Decoding" not in console.text  # negative control: a cache of yours alone is opened as it is
    poisoned(path)
    path.chmod(0o666)
    data = module(images, cache_dir)
    data.setup("fit")
    assert f"into the cache {path} (others may write it (-rw-rw-rw-))" in console.text
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and cache_files(cache_dir) == [path]
    assert torch.equal(images_of(data, "train_dataloader"), decoded(images))


@as_root
def test_another_users_cache_file_is_left_alone_unless_the_folder_is_named_shared(images, tmp_path, console):
    cache_dir = tmp_path / "cache"
    path = built(images, cache_dir)
    poisoned(path)
    os.chown(path, STRANGER, STRANGER)
    for _ in range(2):  # the second run opens the cache in your folder
        console.clear()
        data = module(images, cache_dir)
        data.setup("fit")
        own = cache_dir.resolve() / f"user-{os.geteuid()}"
        (note,) = notes(console)
        assert f"note: the decoded-image cache {path} belongs to another user (uid {STRANGER})" in note
        assert f"yours is kept in {own} (--data.decoded.cache_shared true trusts" in note
        assert data.read_sources[images].cache.path == own / path.name
        assert torch.equal(images_of(data, "train_dataloader"), decoded(images))
    assert "Decoding" not in console.text
    assert stat.S_IMODE(own.stat().st_mode) == 0o700 and path.stat().st_uid == STRANGER  # theirs, unchanged
    console.clear()
    shared = module(images, cache_dir, cache_shared=True)  # negative control: trusted as it is, poisoned pixels
    shared.setup("fit")
    assert not notes(console) and "Decoding" not in console.text
    assert shared.read_sources[images].cache.path == path
    assert (images_of(shared, "train_dataloader") == images_of(shared, "train_dataloader").max()).all()


@as_root
@pytest.mark.parametrize("what", ["a link", "writable by others", "another user's"])
def test_an_own_folder_that_is_not_yours_alone_is_not_used(what, images, tmp_path, console):
    cache_dir = tmp_path / "cache"
    path = built(images, cache_dir)
    os.chown(path, STRANGER, STRANGER)
    own = cache_dir.resolve() / f"user-{os.geteuid()}"
    if what == "a link":
        (tmp_path / "theirs").mkdir(mode=0o700)
        own.symlink_to(tmp_path / "theirs")
    else:
        own.mkdir(mode=0o700)
        own.chmod(0o777) if what == "writable by others" else os.chown(own, STRANGER, STRANGER)
    data = module(images, cache_dir)
    data.setup("fit")
    assert f"cannot be written in {cache_dir} ({own} is not a folder that you alone may write)" in notes(console)[-1]
    assert data.read_sources[images].cache is None and not any((tmp_path / "theirs").glob("*"))
    assert torch.equal(images_of(data, "train_dataloader"), decoded(images))


def test_a_lock_file_you_may_not_write_is_locked_through_a_read_only_descriptor(images, tmp_path, monkeypatch, console):
    cache_dir = tmp_path / "cache"
    path = built(images, cache_dir)
    opened, open_file = [], cache_module.open_file

    def as_another_users(where: Path, flags: int) -> int:  # root may write any file: the refusal is simulated
        opened.append((where.name, flags & os.O_ACCMODE))
        if where.name.endswith(".lock") and flags & os.O_ACCMODE == os.O_RDWR:
            raise PermissionError(13, "Permission denied", str(where))
        return open_file(where, flags)

    monkeypatch.setattr(cache_module, "open_file", as_another_users)
    console.clear()
    data = module(images, cache_dir)
    data.setup("fit")
    assert (f"{path.name}.lock", os.O_RDONLY) in opened and not notes(console) and "Decoding" not in console.text
    assert data.read_sources[images].cache.path == path


def test_cache_shared_without_a_cache_says_it_has_no_effect(images, console):
    ImageFolderDataModule(data_dir=str(images), decoded=DecodedImages(cache=False, cache_shared=True))
    assert "note: data.decoded.cache_shared has no effect: data.decoded.cache is false" in console.text
