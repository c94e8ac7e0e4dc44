"""`pv vectors`: what a vector file holds, how the traits' directions relate, and export / import to other
steering tools (llama.cpp, repeng, steering-vectors, the paper's .pt)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import click

from pv_harness.cli.fail import fail
from pv_harness.cli.options import number_list
from pv_harness.vectors.files import DEFAULT_KIND, VectorError, read_any, read_baseline
from pv_harness.vectors.interop import FORMATS


@click.group()
def vectors() -> None:
    """Inspect and compare persona-vector files (ours, or the paper's .pt files)."""


@vectors.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as JSON.")
def info(path: Path, as_json: bool) -> None:
    """Shapes, how the file was made, and per-layer norms (with held-out AUROC when known)."""
    vf = read_any(path)
    if as_json:
        click.echo(json.dumps({"tensors": {k: list(v.shape) for k, v in vf.tensors.items()},
                               "metadata": vf.metadata}, indent=2))
        return
    for kind, tensor in vf.tensors.items():
        click.echo(f"{kind:<20} {list(tensor.shape)}")
    meta = {k: v for k, v in vf.metadata.items() if k not in ("diagnostics", "baseline")}
    for key, value in meta.items():
        click.echo(f"{key:<20} {value}")
    diagnostics = {row["layer"]: row for row in vf.metadata.get("diagnostics", [])}
    main_kind = "response_avg_diff" if "response_avg_diff" in vf.tensors else next(iter(vf.tensors))
    rows = vf.tensors[main_kind]
    if rows.ndim == 2:
        click.echo(f"\nlayer  norm({main_kind})  held-out AUROC: in context  text only    n  neg mean  pos mean")
        for layer in range(rows.shape[0]):
            row = diagnostics.get(layer, {})
            shown = [f"{a:.3f}" if isinstance(a, float) else "-"
                     for a in (row.get("heldout_auroc_context"), row.get("heldout_auroc"))]
            n = sum((row.get("heldout_n") or {}).values()) or "-"
            baseline = read_baseline(vf.metadata, main_kind, layer)
            means = [f"{v:.3f}" for v in (baseline.neg, baseline.pos)] if baseline else ["-", "-"]
            click.echo(f"{layer:>5}  {float(rows[layer].norm()):>18.3f}  {shown[0]:>26}  {shown[1]:>9}  {n:>3}"
                       f"  {means[0]:>8}  {means[1]:>8}")


def labels(paths: Sequence[Path]) -> dict[Path, str]:
    """Each distinct file (a path given twice counts once) under the shortest label that tells them apart:
    the file's stem, with as many parent folders as it takes (`run1/evil`, `run2/evil`), then the suffix."""
    files = list(dict.fromkeys(path.resolve() for path in paths))
    depth = max(len(path.parts) for path in files)
    candidates = (["/".join([*path.parts[-k:-1], path.name if suffix else path.stem]) for path in files]
                  for suffix in (False, True) for k in range(1, depth + 1))
    return dict(zip(files, next(names for names in candidates if len(set(names)) == len(names)), strict=True))


@vectors.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--kind", default="response_avg_diff", show_default=True, help="Which vector kind to compare.")
@click.option("--layer", type=int, default=None, help="Only this layer (default: every layer).")
@click.option("--html", type=click.Path(dir_okay=False, path_type=Path), help="Also write a heatmap page.")
def compare(paths: tuple[Path, ...], kind: str, layer: int | None, html: Path | None) -> None:
    """Cosine similarity per layer between vector files (for example, different traits of one model)."""
    import torch

    named = labels(paths)
    if len(named) < 2:
        fail(f"nothing to compare: {paths[0]} is one file; give at least two different vector files")
    rows = {}
    for path, label in named.items():
        tensors = read_any(path, kind=kind).tensors
        if kind not in tensors:
            fail(f"{path} has no {kind!r} (it has {sorted(tensors)})")
        rows[label] = tensors[kind]
    shapes = {tuple(t.shape) for t in rows.values()}
    if len(shapes) != 1:
        fail(f"the files have different shapes {sorted(shapes)}: different models?")
    names = list(rows)
    stacked = torch.stack([rows[n] for n in names]).float()  # [F, L+1, H]
    unit = stacked / stacked.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cosine = torch.einsum("alh,blh->lab", unit, unit)  # [L+1, F, F]
    layers = [layer] if layer is not None else list(range(cosine.shape[0]))
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    click.echo("layer  " + "  ".join(f"{names[i]}~{names[j]}" for i, j in pairs))
    for lay in layers:
        click.echo(f"{lay:>5}  " + "  ".join(f"{float(cosine[lay, i, j]):>{len(names[i]) + len(names[j]) + 1}.3f}"
                                             for i, j in pairs))
    if html:
        import plotly.graph_objects as go

        fig = go.Figure(go.Heatmap(
            z=[[float(cosine[lay, i, j]) for i, j in pairs] for lay in layers],
            x=[f"{names[i]} ~ {names[j]}" for i, j in pairs], y=layers, zmin=-1, zmax=1, colorscale="RdBu",
            colorbar={"title": "cosine"}))
        fig.update_layout(title=f"Cosine similarity per layer ({kind})", yaxis_title="layer")
        html.parent.mkdir(parents=True, exist_ok=True)
        fig.write_html(html, include_plotlyjs="directory")  # plotly.min.js beside the page: works offline
        click.echo(f"wrote {html}")


@vectors.command("export")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--to", "fmt", required=True, type=click.Choice(FORMATS), help="The other tool's format.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="File to write.")
@click.option("--kind", default=DEFAULT_KIND, show_default=True, help="Which vector kind to export.")
@click.option("--layers", "rows", callback=number_list(int, "layer numbers"),
              help="Our layer numbers (hidden-states rows), e.g. 10,12 (default: every layer the format holds).")
@click.option("--model-hint", default=None,
              help="controlvector.model_hint for gguf/repeng (default: the model's config model_type, "
                   "else the model name in the file).")
def export_command(path: Path, fmt: str, out: Path, kind: str, rows: list[int] | None,
                   model_hint: str | None) -> None:
    """Write a vector file as a llama.cpp control vector (gguf), repeng's GGUF, steering-vectors or the paper's .pt.

    Our layer l (output of block l, from 1) is block l-1 counted from 0 in all three tools: it is written
    as direction.(l-1) / layer id l-1; the mapping is stored in the file's metadata.
    """
    from pv_harness.vectors.interop import export_vectors, model_type

    try:
        vf = read_any(path, kind=kind)
        model = vf.metadata.get("model")
        hint = model_hint or (model_type(model) if model else None)
        written = export_vectors(vf, fmt, out, kind=kind, rows=rows, model_hint=hint)
    except VectorError as ex:
        fail(str(ex))
    click.echo(f"wrote {written} ({fmt}, {kind})")


@vectors.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--from", "fmt", required=True, type=click.Choice(FORMATS), help="The other tool's format.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Our vector file (.safetensors) to write.")
@click.option("--model", required=True,
              help="The model the vector is for (recorded in the file; a local model's shape is checked).")
@click.option("--kind", default=DEFAULT_KIND, show_default=True, help="Store the vector under this kind.")
def import_command(path: Path, fmt: str, out: Path, model: str, kind: str) -> None:
    """Read another tool's vector into our safetensors file: block N (from 0) becomes our layer N+1;
    layers the file lacks are zero rows."""
    from pv_harness.vectors.interop import import_to_file

    if out.suffix != ".safetensors":
        fail(f"--out {out}: our vector files end in .safetensors")
    try:
        written, vf = import_to_file(path, fmt, out, model=model, kind=kind)
    except VectorError as ex:
        fail(str(ex))
    layers = vf.metadata["imported_layers"]
    click.echo(f"wrote {written}: {kind} {list(vf.tensors[kind].shape)}, {len(layers)} layers "
               f"({layers[0]}..{layers[-1]}) from {fmt}")
