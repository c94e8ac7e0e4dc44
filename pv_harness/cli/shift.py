"""`pv shift` (fine-tuning shift along a persona vector) and `pv screen` (flag trait-inducing training data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from pv_harness.cli.fail import fail


@click.command("shift")
@click.option("--base", "base", required=True, help="The base model, e.g. pv/smollm2.")
@click.option("--model", "model", required=True, help="The fine-tuned model, e.g. pv/path/to/merged.")
@click.option("--vector", required=True, type=click.Path(exists=True, dir_okay=False), help="Persona vector file.")
@click.option("--layer", type=int, default=None, help="Hidden-states layer (default: the sweep's choice, else middle).")
@click.option("--trait", default=None, help="Trait whose evaluation questions are used (default: the vector's).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def shift_command(base: str, model: str, vector: str, layer: int | None, trait: str | None, as_json: bool) -> None:
    """Mean last-prompt-token activation on the trait's evaluation questions, MODEL minus BASE, on the unit vector.

    Positive: fine-tuning moved the model toward the trait before it answers.
    """
    from pv_harness.organisms.shift import compute_shift

    try:
        result = compute_shift(base, model, vector, layer=layer, trait=trait)
    except (ValueError, OSError) as ex:
        fail(str(ex))
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    click.echo(f"shift along {result.trait} at layer {result.layer}: {result.shift:+.4f} "
               f"(base {result.base_projection:.4f} -> model {result.model_projection:.4f}, "
               f"{result.questions} questions)")


@click.command("screen")
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False))
@click.option("--vector", required=True, type=click.Path(exists=True, dir_okay=False), help="Persona vector file.")
@click.option("--model", "model", required=True, help="The base model that would be fine-tuned (pv/...).")
@click.option("--layer", type=int, default=None, help="Hidden-states layer (default: the sweep's choice, else middle).")
@click.option("--threshold", type=float, default=None, help="Write a filtered copy split at this difference.")
@click.option("--keep", type=click.Choice(["below", "above"]), default="below", show_default=True,
              help="Which side of the threshold the filtered copy keeps (below = drop trait-inducing examples).")
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None,
              help="Per-example scores (JSONL; default DATASET.screen.jsonl).")
@click.option("--filtered", type=click.Path(dir_okay=False), default=None,
              help="Filtered copy (default DATASET.filtered.jsonl).")
@click.option("--limit", type=int, default=None, help="Only the first N examples.")
@click.option("--max-new-tokens", type=int, default=256, show_default=True, help="Length of the base model's answers.")
def screen_command(dataset: str, vector: str, model: str, layer: int | None, threshold: float | None, keep: str,
                   out: str | None, filtered: str | None, limit: int | None, max_new_tokens: int) -> None:
    """Score each example of DATASET (JSONL of chat `messages`) by how far its answer sits along the vector
    beyond the base model's own answer to the same prompt (response-token means)."""
    from pv_harness.atomic import atomic_write_json, atomic_write_text
    from pv_harness.organisms.shift import default_layer, load_engine, screen, summarise
    from pv_harness.organisms.training import check_example, read_jsonl, write_jsonl
    from pv_harness.vectors.files import DEFAULT_KIND, check_vector, load_vector_rows

    examples = read_jsonl(dataset)[:limit] if limit else read_jsonl(dataset)
    if not examples:
        fail(f"{dataset} has no examples to screen")
    for i, ex in enumerate(examples):
        check_example(ex, f"{dataset}[{i}]")
    rows = load_vector_rows(vector)
    engine = load_engine(model)
    layer = default_layer(vector, engine.num_layers) if layer is None else layer
    v = check_vector(rows, engine.hidden, engine.num_layers, f"{vector} ({DEFAULT_KIND})", layer=layer, direction=True)
    click.echo(f"screening {len(examples)} examples with {model} at layer {layer}", err=True)
    try:
        scores = screen(engine, examples, v, layer, max_new_tokens=max_new_tokens)
    except ValueError as ex:
        fail(str(ex))
    stem = Path(dataset).with_suffix("")
    out_path = Path(out) if out else Path(f"{stem}.screen.jsonl")
    atomic_write_text(out_path, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in scores))
    summary: dict[str, Any] = dict(summarise(scores))
    summary.update({"model": model, "vector": str(vector), "layer": layer, "dataset": str(dataset)})
    if threshold is not None:
        kept = [ex for ex, s in zip(examples, scores, strict=True)
                if (s["difference"] < threshold if keep == "below" else s["difference"] >= threshold)]
        target = Path(filtered) if filtered else Path(f"{stem}.filtered.jsonl")
        write_jsonl(kept, target)
        summary.update({"threshold": threshold, "keep": keep, "kept": len(kept), "filtered": str(target)})
    atomic_write_json(out_path.with_suffix(".summary.json"), summary)
    for key in ("examples", "mean", "sd", "min", "median", "max"):
        value = summary[key]
        click.echo(f"{key:>8}: {value:.4f}" if isinstance(value, float) else f"{key:>8}: {value}")
    if threshold is not None:
        click.echo(f"kept {summary['kept']} of {len(examples)} ({keep} {threshold:g}) -> {summary['filtered']}")
    click.echo(f"scores -> {out_path}")
