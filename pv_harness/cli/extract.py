"""`pv extract`: collection logs in, a persona-vector file out."""

from __future__ import annotations

from pathlib import Path

import click

from pv_harness.cli.fail import fail
from pv_harness.vectors.thresholds import DEFAULT_COHERENCE, DEFAULT_THRESHOLD


@click.command()
@click.argument("logs", nargs=-1)
@click.option("--log-dir", type=click.Path(exists=True, file_okay=False),
              help="Instead of LOGS: use the newest pos and neg persona_collect logs here (needs --trait).")
@click.option("--trait", help="Trait name (to find logs in --log-dir; checked against the logs).")
@click.option("--model", "model_name", help="Model to run (default: the logs' subject model, e.g. pv/smollm2).")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Vector file (default: vectors/<model>/<trait>.safetensors).")
@click.option("--filter", "mode", type=click.Choice(["paired", "independent"]), default="paired", show_default=True,
              help="paired: the paper's code (pos/neg pairs kept together); independent: each side alone.")
@click.option("--threshold", type=float, default=DEFAULT_THRESHOLD, show_default=True,
              help="Keep pos answers scoring >= T and neg answers < 100-T.")
@click.option("--coherence", type=float, default=DEFAULT_COHERENCE, show_default=True,
              help="Keep answers with coherence >= C.")
@click.option("--min-pairs", type=int, default=10, show_default=True, help="Fail below this many kept per side.")
@click.option("--method", default="mean_diff", show_default=True, help="Extraction method (plugins may add more).")
@click.option("--holdout", type=float, default=0.2, show_default=True,
              help="Share of questions held out for the AUROC diagnostic (0 = none).")
@click.option("--batch-size", type=int, default=None, help="Answers per forward pass (default: 1 on CPU, 8 on GPU).")
@click.option("--device", default=None, help="cpu, cuda, ... (default: cuda if available).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True,
              help="Model dtype for the forward passes (activations are averaged in float32 either way); float32 "
              "matches the paper's vectors, bfloat16 is faster on CPUs with native bf16.")
@click.option("--export-pt", is_flag=True, help="Also write the paper's three .pt files beside the vector file.")
def extract(logs: tuple[str, ...], log_dir: str | None, trait: str | None, model_name: str | None, out: Path | None,
            mode: str, threshold: float, coherence: float, min_pairs: int, method: str, holdout: float,
            batch_size: int | None, device: str | None, dtype: str, export_pt: bool) -> None:
    """Compute persona vectors from persona_collect LOGS (pos and neg; or --log-dir and --trait).

    Writes one safetensors file with response_avg_diff (the one to use), prompt_avg_diff and
    prompt_last_diff, each [layers+1, hidden], plus an HTML report with per-layer held-out AUROC.
    """
    from pv_harness.vectors.extraction import TooFewPairs, extract_from_logs

    try:
        result = extract_from_logs(
            list(logs), log_dir=log_dir, trait=trait, model=model_name,
            out=out, mode=mode, threshold=threshold, coherence=coherence, min_pairs=min_pairs, method=method,
            holdout=holdout, batch_size=batch_size, device=device, dtype=dtype, export_pt=export_pt,
            log=lambda msg: click.echo(msg, err=True),
        )
    except TooFewPairs as ex:
        fail(str(ex), code=2)
    except (ValueError, FileNotFoundError) as ex:
        fail(str(ex))
    click.echo(str(result.path))
