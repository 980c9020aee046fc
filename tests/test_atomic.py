"""The folder rule, as a property of the helpers: they replace or remove only folders the toolkit
made (marked), whoever calls them; a user's folder is refused in one line and left as it was."""

import pytest

from llmdistill.atomic import MARK, atomic_dir, remove_ours, replace_dir, scratch_dir
from llmdistill.errors import UserError


def _user_folder(path):
    path.mkdir()
    (path / "notes.txt").write_text("mine")
    return path


def test_atomic_dir_refuses_a_users_folder_before_any_work(tmp_path):
    mine = _user_folder(tmp_path / "out")
    with pytest.raises(UserError, match="was not written by llmdistill"), atomic_dir(mine):
        raise AssertionError("the block must not run")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "out.tmp").exists()


def test_replace_dir_and_remove_ours_refuse_unmarked_folders(tmp_path):
    mine = _user_folder(tmp_path / "out")
    with atomic_dir(tmp_path / "new") as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(UserError):
        replace_dir(tmp_path / "new", mine)
    with pytest.raises(UserError):
        remove_ours(mine)
    user_tmp = _user_folder(tmp_path / "x.tmp")  # a user's folder that happens to have the temporary's name
    with pytest.raises(UserError), atomic_dir(tmp_path / "x"):
        pass
    assert (mine / "notes.txt").read_text() == "mine" and (user_tmp / "notes.txt").read_text() == "mine"


def test_own_folders_are_replaced_or_moved_aside_and_empty_ones_used(tmp_path):
    out = tmp_path / "out"
    out.mkdir()  # empty: used
    for text in ("1", "2"):
        with atomic_dir(out, kind="model") as tmp:
            (tmp / "w").write_text(text)
    assert (out / "w").read_text() == "2" and (out / MARK).is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with atomic_dir(out, kind="model", replace="move_aside") as tmp:
        (tmp / "w").write_text("3")
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("out.replaced-")]
    assert (out / "w").read_text() == "3" and len(aside) == 1 and (aside[0] / "w").read_text() == "2"
    with pytest.raises(UserError, match="another llmdistill output"), atomic_dir(out, kind="export"):
        pass


def test_a_failed_block_removes_only_its_temporary(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "w").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        raise RuntimeError("boom")
    assert (out / "w").read_text() == "1" and not (tmp_path / "out.tmp").exists()
    with scratch_dir(tmp_path / "work") as work:
        (work / "f").write_text("x")
    assert not (tmp_path / "work").exists()
