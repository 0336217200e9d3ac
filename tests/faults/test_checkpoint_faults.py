"""Damaged checkpoints and full disks (issue 17, items 3 and 4).

Resume verifies a checkpoint's manifest before trusting it and falls back to the newest intact one with a warning;
a write that fails on a full disk stops with one line naming the folder and the space needed, removes its partial
folder and leaves the previous checkpoint as it was.
"""

from __future__ import annotations

import errno
import json
import shutil

import pytest

from alignrl import checkpoint as checkpoint_module
from alignrl.checkpoint import CheckpointError, find_resumable, list_checkpoints
from alignrl.checkpoint_manifest import MANIFEST_FILE, checkpoint_problem, tree_size
from alignrl.config import load_config
from alignrl.learner.trainable import TrainableModel
from alignrl.loop import train
from alignrl.run_dir import RunDirError
from fault_helpers import cli, snapshot, tmpfs, write_recipe


@pytest.fixture()
def three_checkpoints(small_recipe):
    """A finished run with checkpoint-1, -2 and -3."""
    recipe = small_recipe()
    run = train(load_config(base=recipe))
    assert [p.name for p in list_checkpoints(run)] == [f"checkpoint-00000{i}" for i in (1, 2, 3)]
    return recipe, run


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def test_manifest_covers_every_file(three_checkpoints):
    _, run = three_checkpoints
    for checkpoint in list_checkpoints(run):
        manifest = json.loads((checkpoint / MANIFEST_FILE).read_text())
        on_disk = {p.relative_to(checkpoint).as_posix() for p in checkpoint.rglob("*") if p.is_file()}
        assert set(manifest["files"]) == on_disk - {MANIFEST_FILE, "trainer_state.json"}
        assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "state_0.pt"} <= set(manifest["files"])
        assert checkpoint_problem(checkpoint) is None


@pytest.mark.parametrize("damage,named", [
    (lambda c: truncate(c / "model.safetensors"), "model.safetensors has"),
    (lambda c: (c / "optimizer.pt").unlink(), "optimizer.pt is missing"),
    (lambda c: (c / "state_0.pt").write_bytes(b"x" * (c / "state_0.pt").stat().st_size), "state_0.pt does not "
                                                                                         "match its sha256"),
])
def test_damaged_newest_checkpoint_falls_back_with_a_warning(three_checkpoints, capsys, damage, named):
    recipe, run = three_checkpoints
    damage(run / "checkpoint-000003")
    intact_before = snapshot(run / "checkpoint-000002")
    recipe["trainer"]["max_steps"] = 4
    train(load_config(base=recipe), resume=True)
    warning = capsys.readouterr().err
    assert f"checkpoint-000003: {named}" in warning and "resuming from the newest intact checkpoint, " \
                                                          "checkpoint-000002" in warning, warning
    assert snapshot(run / "checkpoint-000002") == intact_before
    assert all(checkpoint_problem(c) is None for c in list_checkpoints(run)), "the re-saved step 3 is intact"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_no_intact_checkpoint_refuses_in_one_line_and_changes_nothing(three_checkpoints):
    recipe, run = three_checkpoints
    truncate(run / "checkpoint-000003" / "model.safetensors")
    (run / "checkpoint-000002" / "optimizer.pt").unlink()
    shutil.rmtree(run / "checkpoint-000001")
    before = snapshot(run)
    with pytest.raises(RunDirError, match=r"no intact checkpoint to resume from \(checkpoint-000003: "
                                          r"model.safetensors has .*; 1 older one\(s\) fail verification too\); "
                                          r"pass trainer.overwrite_output_dir=true") as caught:
        train(load_config(base=recipe), resume=True)
    assert "\n" not in str(caught.value)
    assert snapshot(run) == before


def test_checkpoints_without_a_manifest_still_load_and_are_checked(three_checkpoints, capsys):
    """Checkpoints written before manifests: the files they always hold, safetensors lengths, complete zips."""
    recipe, run = three_checkpoints
    for checkpoint in list_checkpoints(run):
        (checkpoint / MANIFEST_FILE).unlink()
    assert all(checkpoint_problem(c) is None for c in list_checkpoints(run))
    truncate(run / "checkpoint-000003" / "model.safetensors")
    assert "model.safetensors has" in checkpoint_problem(run / "checkpoint-000003")
    truncate(run / "checkpoint-000002" / "optimizer.pt", keep=0.9)
    assert checkpoint_problem(run / "checkpoint-000002") == "optimizer.pt is truncated or not a torch archive"
    (run / "checkpoint-000001" / "scheduler.pt").unlink()
    assert checkpoint_problem(run / "checkpoint-000001") == "scheduler.pt is missing"
    found, skipped = find_resumable(run)
    assert found is None and [s.split(":")[0] for s in skipped] == [f"checkpoint-00000{i}" for i in (3, 2, 1)]


def test_legacy_intact_checkpoint_resumes(three_checkpoints):
    recipe, run = three_checkpoints
    for checkpoint in list_checkpoints(run):
        (checkpoint / MANIFEST_FILE).unlink()
    recipe["trainer"]["max_steps"] = 4
    train(load_config(base=recipe), resume=True)
    assert (run / "checkpoint-000004" / MANIFEST_FILE).is_file(), "new checkpoints get a manifest"


def test_rotation_never_deletes_the_checkpoint_resumed_from(small_recipe):
    """A damaged checkpoint-4 is skipped; saving 3 with save_total_limit=1 must keep 3 (not only the damaged 4)."""
    recipe = small_recipe(max_steps=4, save_steps=2)
    run = train(load_config(base=recipe))
    truncate(run / "checkpoint-000004" / "model.safetensors")
    recipe["trainer"].update(max_steps=5, save_steps=1, save_total_limit=1)
    seen = {}

    def after_step(step, components, metrics):
        seen[step] = [(p.name, checkpoint_problem(p)) for p in list_checkpoints(run)]

    train(load_config(base=recipe), resume=True, callbacks=[after_step])
    assert seen[3][0] == ("checkpoint-000003", None) and seen[3][1][0] == "checkpoint-000004"
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-000005"]


def _fail_second_save(monkeypatch, error):
    """TrainableModel.save writes normally once, then writes half a file and raises ``error``."""
    real_save, calls = TrainableModel.save, []

    def save(self, folder, tokenizer=None):
        calls.append(folder)
        if len(calls) == 1:
            return real_save(self, folder, tokenizer)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.safetensors").write_bytes(b"\0" * 1000)
        raise error

    monkeypatch.setattr(TrainableModel, "save", save)


def test_full_disk_during_a_save_stops_in_one_line(small_recipe, monkeypatch):
    """A simulated ENOSPC: one line naming the folder and the space needed, no partial folder, previous intact."""
    recipe = small_recipe()
    _fail_second_save(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    run = recipe["trainer"]["output_dir"]
    with pytest.raises(CheckpointError) as caught:
        train(load_config(base=recipe))
    message = str(caught.value)
    size = tree_size(list_checkpoints(run)[0])
    assert message.startswith(f"{run}: disk full while writing checkpoint-000002 (partial folder removed)")
    assert f"needs about {size / 1024:.1f} KiB (the size of checkpoint-000001)" in message
    assert "checkpoint-000001 is intact; free space, then continue with --resume" in message and "\n" not in message
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-000001"]
    assert checkpoint_problem(list_checkpoints(run)[0]) is None
    assert not list(list_checkpoints(run)[0].parent.glob(".tmp-*"))


def test_full_disk_without_an_errno_is_recognised_by_free_space(small_recipe, monkeypatch):
    """torch.save on a full disk raises a RuntimeError that names no errno: the free space tells."""
    recipe = small_recipe()
    _fail_second_save(monkeypatch, RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos"))
    monkeypatch.setattr(checkpoint_module, "_free_bytes", lambda path: 4096)
    with pytest.raises(CheckpointError, match="disk full while writing checkpoint-000002.*, 4.0 KiB is free"):
        train(load_config(base=recipe))


def test_other_write_errors_propagate_and_clean_up(small_recipe, monkeypatch):
    recipe = small_recipe()
    _fail_second_save(monkeypatch, RuntimeError("something else"))
    with pytest.raises(RuntimeError, match="something else"):
        train(load_config(base=recipe))
    run = list_checkpoints(recipe["trainer"]["output_dir"])[0].parent
    assert not list(run.glob(".tmp-*")) and [p.name for p in list_checkpoints(run)] == ["checkpoint-000001"]


def test_a_stale_partial_folder_is_removed_by_the_next_save(three_checkpoints):
    recipe, run = three_checkpoints
    stale = run / ".tmp-checkpoint-000009"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 4096)
    recipe["trainer"]["max_steps"] = 4
    train(load_config(base=recipe), resume=True)
    assert not stale.exists()


def test_full_disk_on_a_real_tmpfs(small_recipe, tmp_path):
    """``alignrl train`` writing to a 900 KiB tmpfs: checkpoint-1 (about 600 KiB) fits, checkpoint-2 does not."""
    with tmpfs(tmp_path / "small_disk", "900k") as disk:
        recipe = small_recipe(output_dir=str(disk / "run"))
        done = cli("train", str(write_recipe(tmp_path / "recipe.yaml", recipe)))
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, done.stderr[-3000:]
        assert lines[-1].startswith(f"alignrl train: error: {disk / 'run'}: disk full while writing "
                                    f"checkpoint-000002 (partial folder removed)"), lines[-1]
        assert "Traceback" not in done.stderr
        checkpoints = list_checkpoints(disk / "run")
        assert [p.name for p in checkpoints] == ["checkpoint-000001"] and checkpoint_problem(checkpoints[0]) is None
        assert not list((disk / "run").glob(".tmp-*"))
