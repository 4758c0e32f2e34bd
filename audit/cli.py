"""The audit command line: audit run | init | demo | verify | readers.

* audit run CONFIG — the audit of one model on one cohort, every configured instrument,
  resumable (audit.run); audit init writes a commented example config.
* audit demo [--out reports/demo] — synthetic cohort, trained CNN, hook check, reader study,
  and the default audit of the demo model.
* audit verify MODEL — the hook registry's self-check on a checkpoint (with --arch) or
  on a model folder with a model_card.json (audit verify reports/demo).
* audit report OUT — findings.json and the self-contained report.html of a finished run.
* audit readers READS.csv — every reader-study statistic on one table of reads, and its report.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="medaudit: audit what a trained medical-imaging model really uses.")
console = Console()
errors = Console(stderr=True, soft_wrap=True, highlight=False)


class UserError(ValueError):
    """A mistake in what the user gave (a file, an option value): one red line, exit code 2."""


def _user_errors() -> tuple[type[BaseException], ...]:
    import pandas as pd

    return (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
            UnicodeDecodeError, pd.errors.EmptyDataError, pd.errors.ParserError)


def _log_dir() -> Path:
    root = os.environ.get("MEDAUDIT_CACHE")
    return Path(root) / "logs" if root else Path(tempfile.gettempdir()) / "medaudit-logs"


def command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a CLI command so that no user error shows a traceback.

    A user error (a damaged or unsupported file, a bad option value, an unreadable CSV) prints
    one red line naming the file or option and exits with 2; any other error writes its
    traceback to a log file, says where, and exits with 3.
    """
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                # a warning is one yellow line, not a source excerpt
                warnings.showwarning = lambda message, category, *a, **k: errors.print(
                    f"[yellow]warning:[/yellow] {' '.join(str(message).split())}")
                return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise
        except _user_errors() as err:
            problems = getattr(err, "problems", None)
            if problems:  # a config with several mistakes: one line each, naming its key
                errors.print(f"[red]error:[/red] {len(problems)} problem(s) in the configuration:")
                for p in problems:
                    errors.print(f"  {p}", markup=False)
                raise typer.Exit(2) from None
            msg = " ".join(str(err).split()) or type(err).__name__
            errors.print(f"[red]error:[/red] {msg}")
            raise typer.Exit(2) from None
        except Exception as err:  # noqa: BLE001 - an internal error: keep the traceback, say where
            folder = _log_dir()
            folder.mkdir(parents=True, exist_ok=True)
            log = folder / f"audit-{fn.__name__}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
            log.write_text("".join(traceback.format_exception(err)), encoding="utf-8")
            errors.print(f"[red]internal error[/red] in `audit {fn.__name__}` ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:300]}); the traceback is in {log}")
            raise typer.Exit(3) from None
    return run


def parse_shape(shape: str, option: str = "--shape") -> tuple[int, ...]:
    """``"64,64"`` → ``(64, 64)``: 1-3 positive integers, else a :class:`UserError` naming the option."""
    parts = [p.strip() for p in str(shape).split(",")]
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise UserError(f"{option} {shape!r}: expected 1-3 positive integers separated by commas, "
                        "e.g. 64,64 or 32,32,32") from None
    if not 1 <= len(dims) <= 3 or min(dims) < 1:
        raise UserError(f"{option} {shape!r}: expected 1-3 positive integers separated by commas, "
                        "e.g. 64,64 or 32,32,32")
    return dims


@app.command()
@command
def demo(
    out: Path = typer.Option(Path("reports/demo"), help="output folder"),
    n_cases: int = typer.Option(1500, help="synthetic cases (train/val/test = 70/15/15%)"),
    epochs: int = typer.Option(10, help="training epochs of the demo classifier"),
    seed: int = typer.Option(0),
) -> None:
    """Synthetic cohort, a small CNN with a planted shortcut, its default audit, tables in OUT.

    Example: audit demo --out reports/demo (a second run reuses the cached model).
    """
    from dataclasses import replace

    from audit.demo import DemoConfig, run_demo

    cfg = DemoConfig(n_cases=n_cases, seed=seed)
    cfg = replace(cfg, train=replace(cfg.train, epochs=epochs, seed=seed))
    run_demo(out, cfg, console=console)


@app.command("run")
@command
def run_cmd(
    config: Path = typer.Argument(..., help="the run's YAML configuration (write one with `audit init`)"),
    only: list[str] | None = typer.Option(None, "--only", help="run just this instrument (repeatable)"),
    fresh: bool = typer.Option(False, "--fresh/--resume", help="--resume (default) reuses every finished "
                               "unit of an earlier run of the same config; --fresh recomputes everything"),
    device: str | None = typer.Option(None, help="cpu, cuda or auto (overrides the config's device)"),
) -> None:
    """Audit a model on a cohort: every configured instrument, tables as Parquet under the config's out/.

    Example: audit init --template nifti > audit.yaml then audit run audit.yaml --only gradcam.
    Exit code 0: everything ran; 1: some instrument failed (see out/manifest.json); 2: a mistake in
    the configuration (one line per mistake, naming its key).
    """
    from audit.run import load_config, run_audit

    cfg = load_config(config)
    if device is not None:
        from audit.run.config import parse_config

        data = cfg.model_dump(mode="json")
        data["device"] = device
        cfg = parse_config(data, str(config))
    summary = run_audit(cfg, only=only or None, fresh=fresh, console=errors)
    _print_run(summary)
    _print_findings(summary.out)
    if not summary.ok:
        raise typer.Exit(1)


def _print_findings(out: Path, readers: Path | None = None) -> None:
    """Evaluate the findings of the run in ``out``, write ``out/findings.json`` and ``out/report.html``,
    and list the findings."""
    from audit.report import evaluate_findings
    from audit.report.html import render_report

    found = evaluate_findings(out)
    page = render_report(out, findings=found, readers=readers)
    colour = {"critical": "red", "major": "yellow", "minor": "cyan", "info": "white"}
    console.print(f"{len(found.flagged)} finding(s), {len(found.not_flagged)} tested and not flagged "
                  f"({found.n_tests} tests, Holm-adjusted): {Path(out) / 'findings.json'}")
    for f in found.flagged:
        console.print(f"  [{colour[f.severity]}]{f.severity:>8}[/] {f.sentence}", highlight=False)
    console.print(f"report: {page}", highlight=False, soft_wrap=True)


@app.command()
@command
def report(
    out: Path = typer.Argument(..., help="the out folder of a finished `audit run`"),
    readers: Path | None = typer.Option(None, help="a reader-study folder written by `audit readers`: adds "
                                        "its section to the report"),
) -> None:
    """Findings and the HTML report of a finished audit run, from its stored tables only (the model
    is not loaded): writes OUT/findings.json (every finding, flagged or not, with its statistics)
    and OUT/report.html (one self-contained file), and lists the findings.

    Example: audit run audit.yaml, then audit report audit-out (again after changing nothing: the
    same findings, the same ids, the same page).
    """
    _print_findings(out, readers)


def _print_run(summary) -> None:
    table = Table(title=f"audit run — {summary.out}")
    for col in ("units", "count"):
        table.add_column(col)
    table.add_row("computed", str(len(summary.computed)))
    table.add_row("reused (resume)", str(len(summary.reused)))
    table.add_row("failed", str(len(summary.failed)))
    console.print(table)
    for name, reason in summary.skipped.items():
        console.print(f"  skipped [bold]{name}[/bold]: {reason}", highlight=False)
    for f in summary.failed[:10]:
        console.print(f"  [red]failed[/red] {f['instrument']} {f['unit']}: {f['error'][:300]}", highlight=False)
    console.print(f"tables: {summary.out / 'tables'}   manifest: {summary.out / 'manifest.json'}")


@app.command()
@command
def init(
    template: str = typer.Option("demo", help="demo (synthetic cohort, trains its model), nifti (checkpoint + "
                                 "NIfTI manifest), onnx (channels-last ONNX export + PNG/JPEG folders), "
                                 "3d (MONAI 3D classifier)"),
    out: Path | None = typer.Option(None, help="write here instead of standard output (never overwrites)"),
) -> None:
    """Write a commented example configuration, generated from the configuration's own models.

    Example: audit init --template onnx --out audit.yaml, edit the paths, audit run audit.yaml.
    """
    from audit.run.templates import render_template

    text = render_template(template)
    if out is None:
        typer.echo(text, nl=False)
        return
    if out.exists():
        raise UserError(f"--out {out}: the file exists; choose another name or remove it")
    out.write_text(text)
    console.print(f"wrote {out}")


@app.command()
@command
def verify(
    model_path: Path | None = typer.Argument(
        None, help="checkpoint (.pt/.pth/.ckpt/.safetensors/.onnx), or a model folder with model_card.json "
                   "(written by the trainers and by `audit demo`)"),
    arch: str | None = typer.Option(None, help="timm name or monai:<Class> (not with a model folder)"),
    in_chans: int | None = typer.Option(None), num_classes: int | None = typer.Option(None),
    shape: str | None = typer.Option(None, help="spatial input shape, e.g. 64,64 or 32,32,32 "
                                        "(default: the model card's input shape, else 64,64)"),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint",
                                          help="allow arbitrary unpickling (only for files you trust)"),
    atol: float = typer.Option(1e-5),
) -> None:
    """Self-check the hook registry on a model: every block's anchors hold what they claim.

    Example: audit verify reports/demo or audit verify model.pt --arch resnet18 --in-chans 4.
    """
    import torch

    from audit.models import load_model
    from audit.training import load_trained
    from probes import HookRegistry

    spatial = parse_shape(shape) if shape is not None else None
    card: dict = {}
    if model_path is not None and model_path.is_dir():
        if not (model_path / "model_card.json").is_file():
            raise UserError(f"{model_path} is a folder without a model_card.json: give a checkpoint file, "
                            "or a model folder written by the trainers or `audit demo`")
        if arch is not None or in_chans is not None or num_classes is not None:
            raise UserError(f"{model_path} is a model folder: its model_card.json names the architecture; "
                            "drop --arch/--in-chans/--num-classes")
        model, card = load_trained(model_path)
    else:
        model = load_model(model_path, arch, num_classes=num_classes, in_chans=in_chans,
                           trust_checkpoint=trust_checkpoint)
    c = in_chans or card.get("in_chans") or _first_conv_in_channels(model)
    if spatial is None:
        spatial = tuple(card["input_shape"][1:]) if "input_shape" in card else (64, 64)
    x = torch.randn(2, c, *spatial, generator=torch.Generator().manual_seed(0))
    reg = HookRegistry(model)
    try:
        df = reg.verify(x, atol=atol).table
    except RuntimeError as err:  # the network cannot run on this input (too small, wrong dims)
        raise UserError(f"the model cannot run on an input of shape {tuple(x.shape)} (--shape, --in-chans): "
                        f"{str(err).splitlines()[0]}") from err
    summary = df.groupby("check").agg(n=("passed", "size"), passed=("passed", "sum"), max_err=("max_abs_err", "max"))
    table = Table(title=f"HookRegistry.verify — {len(reg.blocks)} residual blocks, {len(reg.points)} points")
    for col in ("check", "n", "passed", "max |err|"):
        table.add_column(col)
    for check, r in summary.iterrows():
        table.add_row(str(check), str(int(r.n)), str(int(r.passed)), f"{r.max_err:.2e}")
    console.print(table)
    if not df.passed.all():
        console.print(df[~df.passed].to_string())
        raise typer.Exit(1)


@app.command()
@command
def readers(
    reads_csv: Path | None = typer.Argument(None, help="one row per read (CSV); omit with --example"),
    out: Path = typer.Option(Path("reports/readers"), help="output folder for the tables (CSV)"),
    example: bool = typer.Option(False, "--example", help="write and analyse the package's simulated "
                                 "3-phase, 4-reader example study (444 reads)"),
    reader: str = typer.Option("reader", help="column: reader id"),
    case: str = typer.Option("case", help="column: case (patient) id"),
    truth: str = typer.Option("truth", help="column: truth, 0/1"),
    phase: str = typer.Option("phase", help="column: phase / modality / reading condition"),
    decision: str = typer.Option("decision", help="column: binary decision, 0/1 (optional)"),
    score: str = typer.Option("score", help="column: confidence rating or probability (optional)"),
    ai_prob: str = typer.Option("ai_prob", help="column: the AI's probability (optional)"),
    n_boot: int = typer.Option(1000, help="patient-bootstrap resamples"),
    seed: int = typer.Option(0),
) -> None:
    """Reader-study statistics: GEE odds ratios, patient bootstrap, OR/DBM MRMC, ROC, calibration,
    decision curves, outcome changes. Every table is written to OUT as CSV as soon as it is done; OUT/report.html shows them.

    Example: audit readers reads.csv --out reports/readers or audit readers --example.
    """
    import pandas as pd

    from audit.readers import ReadColumns, ReadsError, analyze_reads, write_example_reads

    if example == (reads_csv is not None):
        raise UserError("give either READS_CSV or --example")
    if n_boot < 2:
        raise UserError(f"--n-boot {n_boot}: the patient bootstrap needs at least 2 resamples")
    out.mkdir(parents=True, exist_ok=True)
    if example:
        reads_csv = out / "example_reads.csv"
        write_example_reads(reads_csv)
        console.print(f"example study written to {reads_csv}")
    if not reads_csv.is_file():
        raise UserError(f"no such file: {reads_csv}")
    cols = ReadColumns(reader=reader, case=case, truth=truth, phase=phase, decision=decision, score=score,
                       ai_prob=ai_prob)
    try:
        reads = pd.read_csv(reads_csv)
    except (UnicodeDecodeError, pd.errors.EmptyDataError, pd.errors.ParserError) as err:
        raise UserError(f"cannot read {reads_csv} as a CSV table of reads: {err}") from err
    try:
        res = analyze_reads(reads, cols, out=out, n_boot=n_boot, seed=seed,
                            progress=lambda name: console.print(f"  {name} …", highlight=False))
    except ReadsError as err:
        raise UserError(f"in {reads_csv}: {err}") from err
    table = Table(title=f"reader study — {len(res.files)} tables in {out}")
    for col in ("instrument", "status"):
        table.add_column(col)
    for k in res.done:
        table.add_row(k, "ok")
    for k, v in res.skipped.items():
        table.add_row(k, f"skipped: {v}")
    for k, v in res.failed.items():
        table.add_row(k, f"[red]failed[/red]: {v}")
    console.print(table)
    if "gee" in res.summaries:
        console.print(res.summaries["gee"], highlight=False)
    from audit.report.readers_section import render_reader_report

    console.print(f"summary: {out / 'summary.txt'}   report: {render_reader_report(out)}", highlight=False,
                  soft_wrap=True)
    if res.failed:
        raise typer.Exit(1)


def _first_conv_in_channels(model) -> int:
    import torch

    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)):
            return m.in_channels
    raise UserError("cannot infer the input channels of this model; pass --in-chans")


if __name__ == "__main__":
    app()
