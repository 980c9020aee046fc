"""The ``llmdistill`` command: load a config, call a stage, print where the output went."""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
import typer.core

from llmdistill.errors import UserError
from llmdistill.outputs import stage_dir

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Distil a large teacher LLM into a small student that reasons.")

ConfigArg = Annotated[Path, typer.Argument(help="Run config (YAML).", metavar="CONFIG", show_default=False)]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config value: section.key=value (repeatable).")]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Move outputs made with other settings aside (into a dated folder) instead of refusing.")
]


def _version(value: bool) -> None:
    if value:
        from llmdistill import __version__

        typer.echo(f"llmdistill {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Distil a large teacher LLM into a small student that reasons."""


def _setup_logging() -> None:
    # under several training processes the main one logs the run; the others only their warnings
    level = logging.INFO if int(os.environ.get("RANK", "0")) == 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "filelock", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _load(config: Path, overrides: list[str] | None):
    from llmdistill.config.file import load_config

    _setup_logging()
    return load_config(config, overrides or [])


# Operating-system errors on paths a user chose (output_dir, data, models): theirs to fix, so one
# line and exit code 2 like any UserError. Other OS errors are bugs and keep their traceback.
PATH_ERRNOS = {
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EACCES,
    errno.EPERM,
    errno.ENOSPC,
    errno.EROFS,
    errno.EEXIST,
    errno.ENAMETOOLONG,
    errno.EDQUOT,
}


@contextmanager
def _user_errors():
    """A UserError, or an OS error on a path the user chose, is one line and exit code 2; Ctrl-C
    says how to resume."""
    try:
        yield
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    except OSError as e:
        if e.errno not in PATH_ERRNOS:
            raise
        typer.echo(f"error: {_os_error_text(e)} (check output_dir and the paths in the config)", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: rerun the same command to resume", err=True)
        raise typer.Exit(130) from None


def _os_error_text(e: OSError) -> str:
    """'<path>: <reason>'; for a file where a folder is needed, the file that is in the way."""
    where = " -> ".join(str(p) for p in (e.filename, e.filename2) if p)
    if e.errno in (errno.EEXIST, errno.ENOTDIR) and e.filename:
        blocking = next((p for p in [Path(e.filename), *Path(e.filename).parents] if p.is_file()), None)
        if blocking is not None:
            return f"{blocking}: is a file, where a folder is needed"
    return f"{where}: {e.strerror}"


def _one_process(command: str) -> None:
    """Only ``train`` is built for several processes; another stage would race on its own files."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and command != "train":
        raise UserError(
            f"`llmdistill {command}` runs in one process; only `train` runs under accelerate launch / torchrun (WORLD_SIZE={world})"
        )


def _stage(stage: str, config: Path, overrides: list[str] | None, overwrite: bool) -> None:
    with _user_errors():
        _one_process(stage)
        cfg = _load(config, overrides)
        from llmdistill.pipeline import stage_function

        stats = stage_function(stage)(cfg, overwrite=overwrite)
    if int(os.environ.get("RANK", "0")) == 0:  # under several training processes the main one reports
        typer.echo(f"{stage}: done in {stats['seconds']}s -> {stage_dir(cfg, stage)}")
        _print_headline(stage, stats, cfg)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _leave_launch()


def _leave_launch() -> None:
    """End a finished process of a training launch without the C++ runtime's exit-time destructors.

    The stage has already torn its process group down (a barrier, then destroy); left to the
    interpreter's exit, threads the distributed runtime keeps can still be destroyed while
    joinable and abort a process whose work is done and saved ("terminate called without an
    active exception"), which fails the whole launch. Output and logs are flushed first."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _print_headline(stage: str, stats: dict, cfg) -> None:
    if stage == "generate":
        typer.echo(f"  {stats['traces']} traces for {stats['problems']} problems, {stats['completion_tokens']} output tokens")
    elif stage == "filter":
        typer.echo(
            f"  kept {stats['kept']} of {stats['rows_in']} (rejected by: {json.dumps(stats['rejected_by'])}); teacher accuracy {stats['teacher_accuracy']}"
        )
    elif stage == "train":
        typer.echo(f"  {stats['steps']} steps on {stats['examples']} examples, train loss {stats['train_loss']}")
    elif stage == "evaluate":
        for name, acc in stats["accuracy"].items():
            ci = (stats.get("ci") or {}).get(name)
            interval = f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""
            typer.echo(f"  {name:<13} accuracy {'-' if acc is None else f'{100 * acc:.1f}%'}{interval}")
        if stats.get("gap_closed") is not None:
            typer.echo(f"  gap closed    {100 * stats['gap_closed']:.1f}%")
        typer.echo(f"  report: {stage_dir(cfg, 'evaluate') / 'report.md'}")


@app.command()
def generate(config: ConfigArg, set: SetOpt = None, overwrite: OverwriteOpt = False) -> None:
    """Teacher writes rationale-plus-answer traces for the train split."""
    _stage("generate", config, set, overwrite)


@app.command("filter")
def filter_(config: ConfigArg, set: SetOpt = None, overwrite: OverwriteOpt = False) -> None:
    """Parse, check and clean the traces; rejected rows keep their reason."""
    _stage("filter", config, set, overwrite)


@app.command()
def train(config: ConfigArg, set: SetOpt = None, overwrite: OverwriteOpt = False) -> None:
    """Fine-tune the student on the kept traces."""
    _stage("train", config, set, overwrite)


@app.command()
def evaluate(config: ConfigArg, set: SetOpt = None, overwrite: OverwriteOpt = False) -> None:
    """Teacher and students answer the test split; writes the report."""
    _stage("evaluate", config, set, overwrite)


@app.command("export")
def export_(
    config: ConfigArg,
    set: SetOpt = None,
    to: Annotated[str | None, typer.Option(help="Folder to write (default: <output_dir>/export).")] = None,
    format: Annotated[str | None, typer.Option(help="hf (load_from_disk), parquet or jsonl.")] = None,
    push_to_hub: Annotated[
        str | None, typer.Option("--push-to-hub", help="Dataset repo id to upload to, after writing locally (token: HF_TOKEN).")
    ] = None,
    private: Annotated[bool | None, typer.Option("--private/--public", help="Visibility of a repo created by --push-to-hub.")] = None,
) -> None:
    """The kept traces as an HF dataset (with the rejected ones, TRL-ready views and a dataset card)."""
    flags = {"to": to, "format": format, "push_to_hub": push_to_hub, "private": private}
    overrides = [*(set or []), *(f"export.{k}={json.dumps(v)}" for k, v in flags.items() if v is not None)]
    with _user_errors():
        _one_process("export")
        cfg = _load(config, overrides)
        from llmdistill.stages.export import export

        flag_args = [f"--{k.replace('_', '-')} {v}" for k, v in flags.items() if v is not None and k != "private"]
        flag_args += [] if private is None else ["--private" if private else "--public"]
        command = " ".join(["llmdistill export", str(config), *(f"--set {o}" for o in set or []), *flag_args])
        done = export(cfg, command=command)
    typer.echo(
        f"export: {json.dumps(done['sizes'])} ({done['format']}) -> {done['folder']}"
        + (f"; pushed to {done['pushed_to']}" if done["pushed_to"] else "")
    )


class _ListOptions(typer.core.TyperCommand):
    """``--fractions 0.25 0.5 1.0``: the values after a list option, up to the next ``--`` option,
    are each that option's (click takes one value an occurrence: ``--fractions 0.25 --fractions 0.5``)."""

    lists = ("--fractions", "--modes", "--seeds")

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        out, flag = [], None
        for a in args:
            if a.startswith("-") and not _number(a):
                flag = a if a in self.lists else None
                if flag is None:
                    out.append(a)
            elif flag is not None:
                out += [flag, a]
            else:
                out.append(a)
        return super().parse_args(ctx, out)


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@app.command(cls=_ListOptions)
def curve(
    config: ConfigArg,
    set: SetOpt = None,
    fractions: Annotated[
        list[float] | None, typer.Option("--fractions", help="Shares of the training problems, nested (curve.fractions).")
    ] = None,
    modes: Annotated[list[str] | None, typer.Option("--modes", help="Training modes: label, cot, step_by_step (curve.modes).")] = None,
    seeds: Annotated[list[int] | None, typer.Option("--seeds", help="train.seed of each point (curve.seeds).")] = None,
    overwrite: OverwriteOpt = False,
    report_only: Annotated[
        bool, typer.Option("--report-only", help="Rewrite the report from the points already done; train and evaluate nothing.")
    ] = False,
) -> None:
    """Test accuracy against the share of teacher traces, per mode and seed: train and evaluate each
    point not done yet (each in its own folder), then curve/report.md, curve.png, curve.json."""
    flags = {"fractions": fractions, "modes": modes, "seeds": seeds}
    overrides = [*(set or []), *(f"curve.{k}={json.dumps(v)}" for k, v in flags.items() if v)]
    with _user_errors():
        _one_process("curve")
        cfg = _load(config, overrides)
        from llmdistill.curve import curve as run_curve

        done = run_curve(cfg, overwrite=overwrite, report_only=report_only)
    pending = f", {done['pending']} not done" if done["pending"] else ""
    typer.echo(f"curve: {done['points']} points ({done['ran']} run now{pending}) -> {done['folder']}")
    for line in done["summary"]:
        typer.echo(f"  {line}")
    typer.echo(f"  report: {done['report']}")


@app.command()
def run(
    config: ConfigArg,
    set: SetOpt = None,
    force: Annotated[bool, typer.Option(help="Rerun stages even when their output is complete.")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """All four stages in order, skipping any whose output is complete for this config."""
    with _user_errors():
        _one_process("run")
        cfg = _load(config, set)
        from llmdistill.outputs import read_stats
        from llmdistill.pipeline import run as run_pipeline

        done = run_pipeline(cfg, force=force, overwrite=overwrite)
    for stage, what in done.items():
        typer.echo(f"{stage}: {what} -> {stage_dir(cfg, stage)}")
        _print_headline(stage, read_stats(cfg, stage) or {}, cfg)


if __name__ == "__main__":
    app()
