"""`pv run` hardening: interrupts, unfinished steps, options checked before any work, run folders that remember."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from pv_harness.cli import main
from pv_harness.pipeline import OPTIONS_FILE, RunConfig, RunInterrupted, RunOptionsError, _eval_set, prepare_folder
from pv_harness.provider.batching import Batcher

PV = str(Path(sys.executable).with_name("pv"))


def small_run(model_dir: Path, out: Path) -> list[str]:
    return ["run", "evil", "--model", f"pv/{model_dir}", "--limit", "30", "--max-tokens", "40", "--out", str(out),
            "--threshold", "0", "--coherence", "0", "--filter", "independent", "--min-pairs", "1", "--layers", "2",
            "--coefs", "0,4", "--sweep-questions", "1", "--monitor-questions", "1", "--seed", "0",
            "--display", "none"]


def test_ctrl_c_during_collection_exits_130_naming_the_step_and_the_same_command_finishes(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    args = [PV, *small_run(tiny_model_dir, tmp_path)]
    collect = tmp_path / f"evil-{tiny_model_dir.name}" / "logs" / "collect"
    # SIG_DFL: a test run from a background shell would otherwise hand the child an ignored SIGINT
    with (tmp_path / "stdout").open("w") as out, (tmp_path / "stderr").open("w") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        while proc.poll() is None and not list(collect.glob("*.eval")):  # the step's logs exist once it started
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
    stdout, stderr = (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()
    assert proc.returncode == 130, stderr[-2000:]  # not 134: no native abort from a thread left running
    assert "terminate called" not in stderr
    assert stderr.splitlines()[-1] == ("error: interrupted during collection (step 1/5); "
                                       "run the same command again to resume")
    assert "vectors up to date" not in stderr and stdout == ""

    again = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "[5/5] results" in again.stderr and (collect.parent.parent / "results.json").is_file()


def test_a_step_is_finished_only_when_every_log_is_a_success(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    """inspect's eval_set can answer (True, []) after Ctrl-C: that, a cancelled log or a raised interrupt is a stop."""
    import inspect_ai

    cfg = RunConfig(trait="evil", model="pv/unused", display="none")
    answers: list = []

    def fake_eval_set(tasks, **kwargs):
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    monkeypatch.setattr(inspect_ai, "eval_set", fake_eval_set)
    ok = SimpleNamespace(status="success", error=None)
    answers += [(True, []), (False, [ok, SimpleNamespace(status="cancelled", error=None)]), KeyboardInterrupt()]
    for _ in range(3):
        with pytest.raises(RunInterrupted, match=r"^interrupted during steering sweep \(step 3/5\); run the same "
                                                 r"command again to resume$"):
            _eval_set([object(), object()], tmp_path, cfg, "steering sweep")
    answers.append((False, [ok, SimpleNamespace(status="error", error=SimpleNamespace(message="boom"))]))
    with pytest.raises(RuntimeError, match=r"^collection did not finish \(boom\); run the same command"):
        _eval_set([object(), object()], tmp_path, cfg, "collection")
    answers.append((True, [ok, ok]))
    assert _eval_set([object(), object()], tmp_path, cfg, "collection") == [ok, ok]


@pytest.mark.parametrize(("options", "message"), [
    (["--layers", "999"], "error: --layers 999: pv/{model} has layers 0..4 (l = output of decoder block l); give "
                          "one or more of them"),
    (["--layers", ""], "error: --layers (empty): pv/{model} has layers 0..4 (l = output of decoder block l); give "
                       "one or more of them"),
    (["--coefs", ""], "error: --coefs needs one or more finite numbers, e.g. -2,0,1,2; got []"),
    (["--limit", "-1"], "error: --limit must be a whole number >= 1 (or none for all; 0 = all on the command line), "
                        "got -1"),
    (["--n", "0"], "error: --n must be a whole number >= 1, got 0"),
    (["--sweep-questions", "0"], "error: --sweep-questions must be a whole number >= 1, got 0"),
    (["--monitor-questions", "0"], "error: --monitor-questions must be a whole number >= 1 (or none for all), got 0"),
    (["--holdout", "1"], "error: --holdout must be between 0 and 1 (exclusive), got 1.0"),
])
def test_every_option_is_checked_before_any_work_in_one_line(tiny_model_dir: Path, tmp_path: Path,
                                                             options: list[str], message: str) -> None:
    result = CliRunner().invoke(main, [*small_run(tiny_model_dir, tmp_path), *options])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == message.format(model=tiny_model_dir) + "\n"
    assert list(tmp_path.iterdir()) == []  # nothing started: no run folder, no logs


def test_pv_run_needs_a_pv_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", "evil", "--model", "openai/gpt-4.1-mini", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr == ("error: --model openai/gpt-4.1-mini: pv run needs a pv/ model (the vectors need its "
                             "activations); try --model pv/gpt-4.1-mini\n")


def test_a_run_folder_remembers_its_options_and_fresh_moves_it_aside(tmp_path: Path) -> None:
    folder = tmp_path / "evil-tiny"
    first = RunConfig(trait="evil", model="pv/tiny", layers=[2], coefs=[0.0, 4.0], out=tmp_path)
    prepare_folder(folder, first, log=lambda _: None)
    recorded = json.loads((folder / OPTIONS_FILE).read_text())
    assert recorded["layers"] == [2] and recorded["coefs"] == [0.0, 4.0] and recorded["grader"] == "pv/tiny"
    assert not {"trait", "out", "display", "cache"} & recorded.keys()
    (folder / "logs").mkdir()
    # the same options (how it displays or caches does not count) resume the folder
    prepare_folder(folder, RunConfig(trait="evil", model="pv/tiny", layers=[2], coefs=[0.0, 4.0], out=tmp_path,
                                     display="none", cache=True), log=lambda _: None)

    other = RunConfig(trait="evil", model="pv/tiny", layers=[3], coefs=[0.0, 4.0], n=2, model_args={"dtype": "float16"},
                      out=tmp_path)
    with pytest.raises(RunOptionsError) as raised:
        prepare_folder(folder, other, log=lambda _: None)
    assert str(raised.value) == (
        f"{folder} was made with other options (--layers [2] -> [3]; -M {{}} -> {{'dtype': 'float16'}}; --n 1 -> 2): "
        "rerun with the same options to resume, add --redo-changed to redo only the steps they change, or --fresh to "
        "move that folder aside and start again")

    said: list[str] = []
    prepare_folder(folder, other, fresh=True, log=said.append)
    (aside,) = tmp_path.glob("evil-tiny.old-*")
    assert said == [f"moved the old run folder aside: {aside}"]
    assert (aside / "logs").is_dir() and json.loads((aside / OPTIONS_FILE).read_text()) == recorded  # kept, not lost
    assert sorted(p.name for p in folder.iterdir()) == [OPTIONS_FILE]
    assert json.loads((folder / OPTIONS_FILE).read_text())["layers"] == [3]


def test_redo_changed_keeps_the_steps_before_the_first_one_an_option_changes(tmp_path: Path) -> None:
    folder = tmp_path / "evil-tiny"
    outputs = ["logs/collect/c.eval", "vectors/evil.safetensors", "vectors/evil.layer.json", "logs/sweep/s.eval",
               "logs/monitor/m.eval"]

    def made(cfg: RunConfig) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        prepare_folder(folder, cfg, log=lambda _: None)
        for rel in outputs:
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).touch()

    def redo(cfg: RunConfig) -> tuple[list[str], list[str], list[str]]:
        said: list[str] = []
        prepare_folder(folder, cfg, redo_changed=True, log=said.append)
        (aside,) = tmp_path.glob("evil-tiny.old-*")
        kept = [rel for rel in outputs if (folder / rel).exists()]
        moved = [rel for rel in outputs if (aside / rel).exists()]
        shutil.rmtree(aside)
        return kept, moved, said

    base = RunConfig(trait="evil", model="pv/tiny", layers=[2], out=tmp_path)
    made(base)
    layers = RunConfig(trait="evil", model="pv/tiny", layers=[3], monitor_questions=2, out=tmp_path)
    kept, moved, said = redo(layers)
    assert kept == outputs[:2] and moved == outputs[2:]
    assert said == [f"options changed (--layers, --monitor-questions): redoing from steering sweep; the old output of "
                    f"that step and the later ones is in {said[0].rsplit(' ', 1)[1]}"]
    assert json.loads((folder / OPTIONS_FILE).read_text())["layers"] == [3]

    made(layers)
    kept, moved, _ = redo(RunConfig(trait="evil", model="pv/tiny", layers=[3], monitor_questions=2, threshold=60,
                                    out=tmp_path))
    assert kept == outputs[:1] and moved == outputs[1:]  # a new filter: the same collection, extracted again
    made(layers)
    kept, moved, _ = redo(RunConfig(trait="evil", model="pv/tiny", layers=[3], monitor_questions=2, seed=1,
                                    out=tmp_path))
    assert kept == [] and moved == outputs


def test_model_args_display_and_cache_reach_the_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import pv_harness.pipeline as pipeline

    seen: dict = {}

    def fake_run(cfg: RunConfig, log, fresh: bool = False, redo_changed: bool = False):
        seen.update(cfg=cfg, fresh=fresh)
        raise RuntimeError("stop here")

    monkeypatch.setattr(pipeline, "run", fake_run)
    result = CliRunner().invoke(main, ["run", "evil", "-M", "device=cpu", "-M", "dtype=float32", "-M", "prepack=false",
                                       "--display", "plain", "--cache", "--fresh", "--out", str(tmp_path)])
    assert result.stderr == "error: stop here\n"
    cfg = seen["cfg"]
    assert cfg.model_args == {"device": "cpu", "dtype": "float32", "prepack": False}
    assert (cfg.display, cfg.cache, seen["fresh"]) == ("plain", True, True)
    bad = CliRunner().invoke(main, ["run", "evil", "-M", "device"])
    assert bad.exit_code == 2 and "give key=value (e.g. -M device=cuda -M dtype=bfloat16), got 'device'" in bad.stderr


def test_the_display_choices_are_inspects() -> None:
    import typing

    from inspect_ai.util import DisplayType

    from pv_harness.cli.run import DISPLAY_TYPES

    assert DISPLAY_TYPES == typing.get_args(DisplayType)


def test_closing_a_batcher_waits_for_the_batch_it_is_running() -> None:
    """So no worker is still inside torch when the interpreter exits (a native abort, exit 134)."""
    started, release, done = threading.Event(), threading.Event(), []

    def run_batch(items: list[int]) -> list[int]:
        started.set()
        release.wait()
        done.append(items)
        return items

    batcher: Batcher[int, int] = Batcher(run_batch)
    caller = threading.Thread(target=lambda: asyncio.run(batcher.submit(1)))
    caller.start()
    started.wait()
    threading.Timer(0.2, release.set).start()
    batcher.close()
    assert done == [[1]]
    caller.join()

