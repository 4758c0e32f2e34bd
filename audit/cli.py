"""The ``audit`` command line: ``audit demo | verify | readers``.

* ``audit demo [--out reports/demo]`` — synthetic cohort, trained CNN, hook check, reader study.
* ``audit verify MODEL`` — the hook registry's self-check on a checkpoint (with ``--arch``) or
  on a model folder with a ``model_card.json`` (``audit verify reports/demo``).
* ``audit readers READS.csv`` — every reader-study statistic on one table of reads.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="medaudit: audit what a trained medical-imaging model really uses.")
console = Console()


@app.command()
def demo(
    out: Path = typer.Option(Path("reports/demo"), help="output folder"),
    n_cases: int = typer.Option(1500, help="synthetic cases (train/val/test = 70/15/15%)"),
    epochs: int = typer.Option(10, help="training epochs of the demo classifier"),
    seed: int = typer.Option(0),
) -> None:
    """Synthetic cohort, a small CNN with a planted shortcut, every instrument, tables in OUT."""
    from dataclasses import replace

    from audit.demo import DemoConfig, run_demo

    cfg = DemoConfig(n_cases=n_cases, seed=seed)
    cfg = replace(cfg, train=replace(cfg.train, epochs=epochs, seed=seed))
    run_demo(out, cfg, console=console)


@app.command()
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
    """Self-check the hook registry on a model: every block's anchors hold what they claim."""
    import torch

    from audit.models import load_model
    from audit.training import load_trained
    from probes import HookRegistry

    card: dict = {}
    try:
        if model_path is not None and model_path.is_dir():
            if arch is not None or in_chans is not None or num_classes is not None:
                raise ValueError(f"{model_path} is a model folder: its model_card.json names the architecture; "
                                 "drop --arch/--in-chans/--num-classes")
            model, card = load_trained(model_path)
        else:
            model = load_model(model_path, arch, num_classes=num_classes, in_chans=in_chans,
                               trust_checkpoint=trust_checkpoint)
    except (ValueError, FileNotFoundError) as err:  # bad file/arch: a message, not a traceback
        console.print(f"[red]error:[/red] {err}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from err
    c = in_chans or card.get("in_chans") or _first_conv_in_channels(model)
    if shape is None:
        shape = ",".join(str(s) for s in card["input_shape"][1:]) if "input_shape" in card else "64,64"
    spatial = tuple(int(s) for s in shape.split(","))
    x = torch.randn(2, c, *spatial, generator=torch.Generator().manual_seed(0))
    reg = HookRegistry(model)
    df = reg.verify(x, atol=atol).table
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
    decision curves, outcome changes. Every table is written to OUT as CSV as soon as it is done."""
    import pandas as pd

    from audit.readers import ReadColumns, ReadsError, analyze_reads, write_example_reads

    if example == (reads_csv is not None):
        raise typer.BadParameter("give either READS_CSV or --example")
    out.mkdir(parents=True, exist_ok=True)
    if example:
        reads_csv = out / "example_reads.csv"
        write_example_reads(reads_csv)
        console.print(f"example study written to {reads_csv}")
    if not reads_csv.exists():
        console.print(f"[red]error:[/red] no such file: {reads_csv}")
        raise typer.Exit(2)
    cols = ReadColumns(reader=reader, case=case, truth=truth, phase=phase, decision=decision, score=score,
                       ai_prob=ai_prob)
    try:
        res = analyze_reads(pd.read_csv(reads_csv), cols, out=out, n_boot=n_boot, seed=seed,
                            progress=lambda name: console.print(f"  {name} …", highlight=False))
    except ReadsError as err:
        console.print(f"[red]error in {reads_csv}:[/red] {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from err
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
    console.print(f"summary: {out / 'summary.txt'}")
    if res.failed:
        raise typer.Exit(1)


def _first_conv_in_channels(model) -> int:
    import torch

    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)):
            return m.in_channels
    raise typer.BadParameter("cannot infer the input channels; pass --in-chans")


if __name__ == "__main__":
    app()
