"""Fault injection: real ``alignrl`` subprocesses against a tiny quickstart-size run, one fault each.

    .venv/bin/python benchmarks/fault_injection.py [--work DIR] [--out REPORT.md] [--only NAME ...]

The run is ``recipes/grpo_quickstart.yaml`` (math reward, grader workers) with small overrides, on the quickstart's
1M-parameter model built in code (fresh weights) and its prompts: 4 steps of 4 prompts x 4 samples. For each fault
the table gives the exit status, the first line of the error (or warning), and whether what was already on disk
is unchanged: the sha256 of every file in the run folder before and after. Files a resumed run rewrites by design
(the logs after the checkpoint it resumes from, a damaged checkpoint it re-saves) are listed, not counted. Faults
that need a mount (full disk, read-only filesystem) run on a real tmpfs when the script runs as root.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "grpo_quickstart.yaml"
LOGS = ("metrics.jsonl", "completions.jsonl")
# ENOSPC simulated inside the real CLI: the second model save writes half a file, then the disk is "full"
ENOSPC_WRAPPER = """
import errno, sys
from alignrl.learner.trainable import TrainableModel
real, calls = TrainableModel.save, []
def save(self, folder, tokenizer=None):
    calls.append(folder)
    if len(calls) == 1:
        return real(self, folder, tokenizer)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(bytes(1 << 20))
    raise OSError(errno.ENOSPC, "No space left on device")
TrainableModel.save = save
from alignrl.cli import main
sys.exit(main(sys.argv[1:]))
"""


@dataclass
class Result:
    fault: str
    expected: str
    status: str
    first_line: str
    unchanged: str
    seconds: float = 0.0


def run(args: list[str], timeout: float = 600, python: list[str] | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, *(python or ["-m", "alignrl.cli"]), *args]
    return subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "alignrl.cli", *args], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def first_line(stderr: str) -> str:
    """The first ``alignrl ...: error/warning/preempted`` line; for a traceback, its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if re.match(r"^alignrl( [\w ]+)?: (error|warning|preempted)", line):
            return line
    if "Traceback" in stderr:
        return "traceback: " + lines[-1]
    return "(none)"


def snapshot(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def unchanged(before: dict[str, str], after: dict[str, str], rewritten: Callable[[str], bool] = lambda _: False
              ) -> str:
    """"yes" when every file that existed is there with the same hash, apart from files rewritten by design."""
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    bad = [name for name in changed if not rewritten(name)]
    if bad:
        return f"NO: {', '.join(bad[:4])}" + (" ..." if len(bad) > 4 else "")
    groups = sorted({name.split("/")[0] + ("/" if "/" in name else "") for name in changed})
    return f"yes ({len(before)} files" + (f"; rewritten by design: {', '.join(groups)})" if groups else ")")


class Bench:
    def __init__(self, work: Path):
        self.work = work
        self.model, self.data = work / "model", work / "data"
        self.base = work / "base"

    def overrides(self, out: Path, *extra: str) -> list[str]:
        return [str(RECIPE), f"model.path={self.model}", f"data.train={self.data / 'train.jsonl'}", "data.eval=null",
                "eval.every_steps=0", "rollout.prompts_per_step=4", "rollout.n=4", "trainer.max_steps=4",
                "trainer.save_steps=1", "trainer.save_total_limit=10", "trainer.micro_batch_size=16",
                "logging.progress_bar=false", f"trainer.output_dir={out}", *extra]

    def prepare(self) -> None:
        from alignrl.quickstart.task import make_prompts
        from alignrl.quickstart.tiny_model import build_model, build_tokenizer

        tokenizer = build_tokenizer()
        build_model(tokenizer, preset="quickstart", seed=0).save_pretrained(self.model)
        tokenizer.save_pretrained(self.model)
        self.data.mkdir(parents=True)
        (self.data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in make_prompts(64, seed=0)))
        done = run(["train", *self.overrides(self.base)])
        if done.returncode != 0:
            raise SystemExit(f"the base run failed:\n{done.stderr[-3000:]}")

    def copy(self, name: str) -> Path:
        target = self.work / name
        shutil.copytree(self.base, target)
        return target


def resumed_rewrites(from_step: int) -> Callable[[str], bool]:
    """Files a resume from ``from_step`` rewrites: the logs (truncated there) and the checkpoints after it."""
    def rewritten(name: str) -> bool:
        step = re.match(r"checkpoint-(\d+)/", name)
        stale = name.startswith(".tmp-checkpoint-")  # a killed save's partial folder, removed by the next save
        return stale or name in LOGS or (step is not None and int(step.group(1)) > from_step)
    return rewritten


def resume_case(bench: Bench, key: str, name: str, expected: str, damage: Callable[[Path], None],
                from_step: int, *extra: str, python: list[str] | None = None) -> Result:
    """A copy of the finished base run, damaged, then ``train --resume``; the copy is hashed before and after."""
    run_dir = bench.copy(key)
    damage(run_dir)
    before = snapshot(run_dir)
    t0 = time.perf_counter()
    done = run(["train", *bench.overrides(run_dir, *extra), "--resume"], python=python)
    return Result(name, expected, str(done.returncode), first_line(done.stderr),
                  unchanged(before, snapshot(run_dir), resumed_rewrites(from_step)), time.perf_counter() - t0)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def mount_tmpfs(path: Path, size_bytes: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def skipped(name: str, expected: str, why: str) -> Result:
    return Result(name, expected, "skipped", why, "n/a")


def fault_disk_full_tmpfs(bench: Bench) -> Result:
    name, expected = "full disk (real tmpfs) at checkpoint-5", "2, one line, partial folder removed"
    mount = bench.work / "small_disk"
    checkpoint = sum(p.stat().st_size for p in (bench.base / "checkpoint-000004").rglob("*") if p.is_file())
    used = sum(p.stat().st_size for p in bench.base.rglob("*") if p.is_file())
    if not mount_tmpfs(mount, used + checkpoint // 2 + (64 << 10)):
        return skipped(name, expected, "needs root to mount a tmpfs")
    try:
        shutil.copytree(bench.base, mount / "run")
        before = snapshot(mount / "run")
        t0 = time.perf_counter()
        done = run(["train", *bench.overrides(mount / "run", "trainer.max_steps=6"), "--resume"])
        left = [p.name for p in (mount / "run").glob(".tmp-*")]
        result = Result(name, expected, str(done.returncode), first_line(done.stderr),
                        unchanged(before, snapshot(mount / "run"), resumed_rewrites(4)), time.perf_counter() - t0)
        result.unchanged += f"; partial folders left: {left or 'none'}"
        return result
    finally:
        umount(mount)


def fault_read_only(bench: Bench) -> Result:
    name, expected = "read-only filesystem, --resume", "2 before the model loads"
    mount = bench.work / "ro_disk"
    if not mount_tmpfs(mount, 256 << 20):
        return skipped(name, expected, "needs root to mount a tmpfs")
    try:
        shutil.copytree(bench.base, mount / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        before = snapshot(mount / "run")
        t0 = time.perf_counter()
        done = run(["train", *bench.overrides(mount / "run", "trainer.max_steps=6"), "--resume"])
        return Result(name, expected, str(done.returncode), first_line(done.stderr),
                      unchanged(before, snapshot(mount / "run")), time.perf_counter() - t0)
    finally:
        umount(mount)


def fault_output_is_file(bench: Bench) -> Result:
    target = bench.work / "a_file"
    target.write_text("not a folder\n")
    t0 = time.perf_counter()
    done = run(["train", *bench.overrides(target)])
    same = "yes (the file)" if target.read_text() == "not a folder\n" else "NO"
    return Result("output_dir is a regular file", "2, one line", str(done.returncode), first_line(done.stderr),
                  same, time.perf_counter() - t0)


def bad_data_case(bench: Bench, key: str, name: str, content: bytes, expected: str) -> Result:
    data = bench.work / f"{key}.jsonl"
    data.write_bytes(content)
    return resume_case(bench, key, name, expected, lambda run_dir: None, 4, f"data.train={data}",
                       "trainer.max_steps=6")


def fault_eval_utf8(bench: Bench) -> Result:
    data = bench.work / "math_bad.jsonl"
    data.write_bytes(b'{"problem": "1+1", "answer": "2"}\n{"problem": "\xff", "answer": "1"}\n')
    out = bench.work / "eval_out"
    t0 = time.perf_counter()
    done = run(["eval", "math500", "--model", str(bench.model), "--data", str(data), "--out", str(out),
                "--no-chat-template", "--instruction", "", "--max-tokens", "8", "--no-progress"])
    return Result("eval math500: invalid UTF-8 byte in --data", "2, names file and line", str(done.returncode),
                  first_line(done.stderr), "n/a (new folder)", time.perf_counter() - t0)


def fault_signal(bench: Bench, sig: signal.Signals) -> list[Result]:
    run_dir = bench.work / f"preempt_{sig.name}"
    t0 = time.perf_counter()
    process = start(["train", *bench.overrides(run_dir, "trainer.max_steps=200", "trainer.save_steps=0"),
                     "--resume", "auto"])
    metrics = run_dir / "metrics.jsonl"
    while process.poll() is None and not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 2):
        time.sleep(0.02)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=300)
    results = [Result(f"{sig.name} during training (--resume auto, fresh folder)", "75, checkpoint saved",
                      str(process.returncode), first_line(stderr),
                      "n/a (new run); checkpoints: " + ", ".join(p.name for p in run_dir.glob("checkpoint-*")),
                      time.perf_counter() - t0)]
    if sig == signal.SIGTERM:
        steps = len(metrics.read_text().splitlines())
        before = snapshot(run_dir)
        t0 = time.perf_counter()
        done = run(["train", *bench.overrides(run_dir, f"trainer.max_steps={steps + 2}", "trainer.save_steps=0"),
                    "--resume", "auto"])
        results.append(Result(f"rerun after {sig.name} with --resume auto", "0, continues from the checkpoint",
                              str(done.returncode), first_line(done.stderr) if done.returncode else
                              f"(none; steps logged: {len(metrics.read_text().splitlines())})",
                              unchanged(before, snapshot(run_dir), resumed_rewrites(steps)),
                              time.perf_counter() - t0))
    return results


def fault_sigkill_mid_save(bench: Bench) -> list[Result]:
    run_dir = bench.work / "sigkill_save"
    process = start(["train", *bench.overrides(run_dir, "trainer.max_steps=200")])
    while process.poll() is None and not (len(list(run_dir.glob("checkpoint-*"))) >= 2 and
                                          list(run_dir.glob(".tmp-checkpoint-*"))):
        time.sleep(0.002)
    process.kill()
    process.communicate()
    landed = "during a save" if list(run_dir.glob(".tmp-checkpoint-*")) else "between saves"
    from alignrl.checkpoint import list_checkpoints

    last = list_checkpoints(run_dir)[-1]
    step = int(last.name.split("-")[1])
    before = snapshot(run_dir)
    t0 = time.perf_counter()
    done = run(["train", *bench.overrides(run_dir, f"trainer.max_steps={step + 2}"), "--resume"])
    return [Result(f"SIGKILL of train ({landed}), then --resume", "0, resumes from the last complete checkpoint",
                   str(done.returncode), first_line(done.stderr), unchanged(before, snapshot(run_dir),
                                                                            resumed_rewrites(step)),
                   time.perf_counter() - t0)]


def timed(name: str, expected: str, args: list[str], note: str) -> Result:
    t0 = time.perf_counter()
    done = run(args)
    return Result(name, expected, str(done.returncode), first_line(done.stderr), note, time.perf_counter() - t0)


def fault_failed_start(bench: Bench) -> list[Result]:
    run_dir = bench.work / "failed_start"
    results = [timed("missing optional package (logging.report_to=[wandb])", "2, names package and install",
                     ["train", *bench.overrides(run_dir, "logging.report_to=[wandb]")], "")]
    results[0].unchanged = "run folder created: " + ("yes" if run_dir.exists() else "no")
    run_dir.mkdir(exist_ok=True)  # what a start that failed after claiming the folder leaves
    (run_dir / "run_config.yaml").write_text("left: by a failed start\n")
    (run_dir / "rewards.json").write_text("[]\n")
    results.append(timed("--resume on a failed start's folder", "2, nothing to resume; plain command",
                         ["train", *bench.overrides(run_dir, "trainer.max_steps=1"), "--resume"], "n/a"))
    results.append(timed("plain rerun on a failed start's folder", "0",
                         ["train", *bench.overrides(run_dir, "trainer.max_steps=1")],
                         "n/a (failed-start files are rewritten)"))
    return results


def fault_grade_surrogate(bench: Bench) -> Result:
    answers = bench.work / "surrogate_answers.jsonl"
    answers.write_text('{"output": "\\\\boxed{2}", "gold": "2"}\n{"output": "\\ud800 \\\\boxed{3}", "gold": "3"}\n')
    t0 = time.perf_counter()
    done = run(["grade", str(answers), "--no-progress"])
    verdicts = len([line for line in done.stdout.splitlines() if line.strip()])
    return Result('alignrl grade: output holding "\\ud800"', "verdicts kept", str(done.returncode),
                  first_line(done.stderr), f"{verdicts}/2 verdicts written", time.perf_counter() - t0)


def fault_grade_sigkill(bench: Bench) -> Result:
    import psutil

    answers = bench.work / "slow_answers.jsonl"
    answers.write_text("".join(json.dumps({"output": f"\\boxed{{10^{{100000000{i}}}}}", "gold": "10^{10^{10}}"})
                               + "\n" for i in range(4)))
    process = start(["grade", str(answers), "--workers", "2", "--timeout", "120", "--no-progress"])
    parent, deadline, t0 = psutil.Process(process.pid), time.time() + 120, time.perf_counter()
    while time.time() < deadline and process.poll() is None and len(parent.children(recursive=True)) < 2:
        time.sleep(0.2)
    time.sleep(5)  # the workers start on the slow answers at once
    children = parent.children(recursive=True) if process.poll() is None else []
    busy = [c for c in children if _cpu_busy(c)]
    pids = [c.pid for c in children]
    process.send_signal(signal.SIGKILL)
    process.communicate()
    time.sleep(5)
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    for pid in alive:  # clean up what this script started
        os.kill(pid, signal.SIGKILL)
    return Result("SIGKILL of alignrl grade with busy workers", "no worker alive 5 s later", "-9 (killed)",
                  f"{len(busy)} busy of {len(pids)} children at the kill", f"alive after 5 s: {len(alive)}",
                  time.perf_counter() - t0)


def _cpu_busy(proc) -> bool:
    try:
        first = sum(proc.cpu_times()[:2])
        time.sleep(1.0)
        return sum(proc.cpu_times()[:2]) - first > 0.05
    except Exception:  # noqa: BLE001 - a child that exited is simply not busy
        return False


def faults(bench: Bench) -> dict[str, Callable[[], Result | list[Result]]]:
    def newest(d: Path) -> Path:
        return d / "checkpoint-000004"

    def damage_all(d: Path) -> None:
        for checkpoint in d.glob("checkpoint-*"):
            truncate(checkpoint / "model.safetensors")

    good = b'{"prompt": "1+1=", "answer": "2"}\n'
    return {
        "truncated_model": lambda: resume_case(
            bench, "truncated_model", "truncated newest model.safetensors, --resume", "0, warning, falls back",
            lambda d: truncate(newest(d) / "model.safetensors"), 3),
        "deleted_optimizer": lambda: resume_case(
            bench, "deleted_optimizer", "deleted newest optimizer.pt, --resume", "0, warning, falls back",
            lambda d: (newest(d) / "optimizer.pt").unlink(), 3),
        "none_intact": lambda: resume_case(
            bench, "none_intact", "every checkpoint damaged, --resume", "2, one line", damage_all, 0),
        "enospc_simulated": lambda: resume_case(
            bench, "enospc_simulated", "ENOSPC (simulated) at the 2nd save", "2, one line, space needed",
            lambda d: None, 4, "trainer.max_steps=6", python=["-c", ENOSPC_WRAPPER]),
        "disk_full_tmpfs": lambda: fault_disk_full_tmpfs(bench),
        "read_only": lambda: fault_read_only(bench),
        "output_is_file": lambda: fault_output_is_file(bench),
        "train_utf8": lambda: bad_data_case(
            bench, "train_utf8", "invalid UTF-8 byte in data.train, --resume",
            good + b'{"prompt": "\xc3(", "answer": "1"}\n', "2, names file and line"),
        "train_surrogate": lambda: bad_data_case(
            bench, "train_surrogate", "\\ud800 in a training prompt, --resume",
            good + b'{"prompt": "\\ud800 2+2=", "answer": "4"}\n', "2, names file and row"),
        "eval_utf8": lambda: fault_eval_utf8(bench),
        "sigterm": lambda: fault_signal(bench, signal.SIGTERM),
        "sigusr1": lambda: fault_signal(bench, signal.SIGUSR1),
        "sigkill_mid_save": lambda: fault_sigkill_mid_save(bench),
        "failed_start": lambda: fault_failed_start(bench),
        "grade_surrogate": lambda: fault_grade_surrogate(bench),
        "grade_sigkill": lambda: fault_grade_sigkill(bench),
    }


def table(results: list[Result]) -> str:
    rows = ["| fault | expected | exit | first line of the error | already on disk unchanged | s |",
            "|---|---|---|---|---|---|"]
    for r in results:
        cells = [r.fault, r.expected, r.status, r.first_line.replace("|", "\\|"), r.unchanged, f"{r.seconds:.0f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", help="scratch folder (default: a new temporary folder, removed at the end)")
    parser.add_argument("--out", default="runs/fault_injection.md", help="Markdown table (default %(default)s)")
    parser.add_argument("--only", nargs="+", help="run only these faults (names as in the source)")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="alignrl-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(work)
    t0 = time.perf_counter()
    bench.prepare()
    print(f"base run ready in {time.perf_counter() - t0:.0f} s: {bench.base}", file=sys.stderr)
    results: list[Result] = []
    for key, fault in faults(bench).items():
        if args.only and key not in args.only:
            continue
        try:
            got = fault()
        except Exception as err:  # noqa: BLE001 - one broken fault must not hide the others
            got = Result(key, "", "harness error", f"{type(err).__name__}: {err}", "n/a")
        for result in got if isinstance(got, list) else [got]:
            results.append(result)
            print(f"{result.fault}: exit {result.status}; {result.first_line}; unchanged: {result.unchanged}",
                  file=sys.stderr, flush=True)
    report = table(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("# Fault injection\n\n" + report)
    print(report)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
