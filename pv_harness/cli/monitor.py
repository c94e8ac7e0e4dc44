"""`pv monitor`: generate an answer and watch each token's projection on a persona vector as it streams."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pv_harness.cli.fail import fail


def _default_layer(vector: Path) -> int | None:
    from pv_harness.reports.sweep import read_layer_choice

    choice = read_layer_choice(vector)
    return int(choice["layer"]) if choice else None


def _default_model(vector: Path) -> str:
    from pv_harness.vectors.files import read_any

    return str(read_any(vector).metadata.get("model") or "pv/smollm2")


@click.command()
@click.argument("prompt")
@click.option("--vector", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Persona vector file (ours, or the paper's .pt).")
@click.option("--layer", type=int, default=None,
              help="Layer to project (default: the one `pv report sweep` chose for this vector).")
@click.option("--kind", default="response_avg_diff", show_default=True, help="Which vector in the file.")
@click.option("--model", "model_name", default=None, help="Model (default: the one the vector was made from).")
@click.option("--system", default=None, help="System prompt.")
@click.option("--max-tokens", type=int, default=200, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True, help="0 = greedy.")
@click.option("--seed", type=int, default=None)
@click.option("--scale", type=float, default=None,
              help="Half-range of the colour scale, in projection units (default: the vector's pos-neg gap).")
@click.option("--html", type=click.Path(dir_okay=False, path_type=Path), help="Also write a heatmap page.")
@click.option("--device", default=None)
def monitor(prompt: str, vector: Path, layer: int | None, kind: str, model_name: str | None, system: str | None,
            max_tokens: int, temperature: float, seed: int | None, scale: float | None, html: Path | None,
            device: str | None) -> None:
    """Stream the answer to PROMPT, each token coloured by its projection on the vector (red: towards the trait)."""
    from pv_harness.models import local_path
    from pv_harness.provider.engine import Engine, GenRequest
    from pv_harness.provider.interventions import SteeringError, parse_monitor
    from pv_harness.reports.monitor import ColourScale, ansi_token, vector_scale, write_prompt_page
    from pv_harness.vectors.files import VectorError

    layer = layer if layer is not None else _default_layer(vector)
    if layer is None:
        fail("give --layer (no layer choice from `pv report sweep` beside this vector)")
    model_name = model_name or _default_model(vector)
    try:
        engine = Engine.load(local_path(model_name), device=device)
        specs = parse_monitor([{"vector": str(vector), "layer": layer, "kind": kind}], hidden=engine.hidden,
                              num_layers=engine.num_layers, cache=engine.vectors)
        colours = vector_scale(vector, layer, kind)  # fixed before the first token, shared with --html
    except (SteeringError, VectorError, ValueError) as ex:
        fail(str(ex))
    if scale is not None:
        colours = ColourScale(colours.centre, abs(scale), colours.centre_from, "--scale")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]

    def show(token: str, value: float | None) -> None:
        click.echo(ansi_token(token, value, colours), nl=False)
        sys.stdout.flush()

    click.echo(click.style(f"{model_name} · layer {layer} · {vector.name}", dim=True), err=True)
    click.echo(f"colours: {ansi_token('away', colours.low, colours)} {ansi_token('centre', colours.centre, colours)} "
               f"{ansi_token('towards', colours.high, colours)} {colours.legend()}", err=True)
    click.echo(click.style("Question: ", bold=True) + prompt)
    request = GenRequest(prompt_ids=engine.encode(engine.chat_text(messages)), max_new_tokens=max_tokens,
                         temperature=temperature, seed=seed, monitor=specs, on_token=show)
    (result,) = engine.generate([request])
    assert result.monitor, "a monitored request returns its projections"
    data = result.monitor[0]
    values = data["projections"]
    click.echo()
    mean, top = data["response_mean"], max(values, default=None)  # an empty answer has neither
    click.echo(f"last prompt token {data['prompt_last']:+.3f} · response mean "
               f"{'-' if mean is None else format(mean, '+.3f')} · max {'-' if top is None else format(top, '+.3f')}",
               err=True)
    if html:
        write_prompt_page(html, f"Token monitor: {vector.name}", prompt, model_name, data, colours)
        click.echo(f"wrote {html}", err=True)
