"""The pages: rendered from the templates in `pv_harness/reports/templates/` (one base layout, autoescaped),
with no HTML written in Python, and robust to what real logs hold (an empty answer, unscored samples)."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

from inspect_ai.log import EvalConfig, EvalDataset, EvalLog, EvalSample, EvalSpec, write_eval_log
from inspect_ai.model import ModelOutput
from inspect_ai.scorer import Score

from pv_harness.reports.monitor import token_scale, write_monitor_report, write_prompt_page
from pv_harness.reports.pages import number
from pv_harness.reports.run import write_run_page

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "pv_harness" / "reports" / "templates"


def monitored(sample_id: int, tokens: list[str], projections: list[float], trait: float | None) -> EvalSample:
    """A sample as the pv/ provider logs it: the answer's tokens and their projections in `pv_monitor`."""
    output = ModelOutput.from_content("pv/tiny", "".join(tokens))
    output.metadata = {"pv_monitor": [{
        "layer": 2, "vector": "v", "kind": "response_avg_diff", "tokens": tokens, "projections": projections,
        "prompt_last": 0.5, "response_mean": sum(projections) / len(projections) if projections else None}]}
    scores = {"trait_judge": Score(value=float("nan") if trait is None else trait),
              "coherence_judge": Score(value=90.0)}
    return EvalSample(id=sample_id, epoch=1, input="q", target="", output=output, scores=scores)


def write_log(path: Path, samples: list[EvalSample]) -> Path:
    spec = EvalSpec(created="2025-01-01T00:00:00", task="trait_eval", model="pv/tiny", config=EvalConfig(),
                    dataset=EvalDataset(samples=len(samples), sample_ids=[s.id for s in samples]),
                    metadata={"trait": "evil"})
    write_eval_log(EvalLog(status="success", eval=spec, samples=samples), str(path))
    return path


def test_monitor_page_shows_an_empty_answer(tmp_path: Path) -> None:
    """An answer of no tokens has no response mean (None); the page says so instead of crashing."""
    log = write_log(tmp_path / "m.eval", [monitored(1, [], [], 80.0), monitored(2, ["Hi", "!"], [1.0, -0.5], None)])
    page = write_monitor_report(log, tmp_path / "m.html").read_text()
    assert "<b>1 (epoch 1)</b> &middot; layer 2 &middot; last prompt token +0.500 &middot; response mean - " \
           "&middot; judge 80</div></div>" in page
    assert ('<span class="tok" style="background:rgb(214,39,40)" title="+1.000">Hi</span>'
            '<span class="tok" style="background:rgb(143,187,218)" title="-0.500">!</span></div>') in page
    assert "response mean +0.250 &middot; unscored" in page
    assert (tmp_path / "plotly.min.js").exists()


def test_pages_escape_what_comes_from_models_and_logs(tmp_path: Path) -> None:
    monitor = {"layer": 1, "tokens": ["<b>", "\n"], "projections": [0.0, 2.0], "prompt_last": -1.0,
               "response_mean": 1.0}
    page = write_prompt_page(tmp_path / "p.html", "Token monitor: <v>", "say <script>", "pv/<m>", monitor,
                             token_scale([0.0, 2.0])).read_text()
    assert "<title>Token monitor: &lt;v&gt;</title>" in page
    assert '<div class="question"><b>Question:</b> say &lt;script&gt;</div>' in page
    assert ('title="+0.000">&lt;b&gt;</span><span class="tok" style="background:rgb(214,39,40)" '
            'title="+2.000">↵<br></span>') in page
    assert "<script" not in page  # no plotly on this page, and the prompt's tag is text


def run_results(**overrides: object) -> dict:
    """A `results.json` as `pv run` writes it, with no layer chosen."""
    results = {
        "trait": "evil", "model": "pv/tiny", "judge": "pv/tiny (likelihood)", "layer": None, "coef": None,
        "layer_rule": None, "monitor_layer": 2, "auroc": 0.875, "auroc_ci": [0.7, 1.0], "auroc_text": None,
        "auroc_text_ci": None, "auroc_n": 40, "auroc_test_set": "held-out questions: 1, 4",
        "steering": [{"layer": 2, "coef": 0.0, "trait": 20.0, "trait_ci": [10.0, 30.0], "coherence": 30.0,
                      "coherence_ci": None, "n": 1}],
        "steering_effect": {"layer": 2, "coef": 4.0, "effect": 25.5, "ci": [-1.0, 52.0], "n": 20},
        "monitor_r": 0.5, "monitor_r_ci": [0.25, 0.7], "monitor_n": 60,
        "collection": {"pos": {"trait": 71.25, "trait_ci": [60.0, 80.0], "trait_n": 99, "coherence": None,
                               "coherence_ci": None, "coherence_n": 0, "answers": 100}},
        "kept": {}, "seconds": 12.3,
    }
    return {**results, **overrides}


def test_run_page_leads_with_the_findings_and_shows_the_note_the_caller_gives(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = {"results": run_results(), "vector": out / "v.safetensors",
            "layer_note": "no layer chosen: no steered setting met the coherence floor; monitored at swept layer 2",
            "vector_meta": {"pos_samples": 3, "neg_samples": 4, "filter": "paired"},
            "examples": [{"setting": "L2 c4", "answer": "<evil>", "trait": 90.0, "coherence": None}],
            "pages": {"steering sweep": out / "sweep.html"}, "files": {"results.json": out / "results.json"},
            "logs_root": out / "logs"}
    page = write_run_page(out, **args).read_text()
    assert 'class="note"' not in page
    found = page.index("<h2>What was found</h2>")
    assert found < page.index("<h2>Collection</h2>") and found < page.index("<h2>Pages</h2>")
    assert "<li>no layer chosen by the sweep; figures below are for swept layer 2</li>" in page
    assert "<li>held-out AUROC at layer 2, in context: 0.88 (95% CI 0.70 to 1.00), n = 40</li>" in page
    assert "<li>held-out AUROC at layer 2, text only: n/a, n = 40</li>" in page
    assert ("<li>steering effect at layer 2, largest coefficient: coef 4 minus coef 0 = +25.5 trait points "
            "(95% CI -1.0 to +52.0, n = 20)</li>") in page
    assert "chosen setting" not in page  # no layer was chosen
    assert ("monitoring: Pearson r(last prompt token projection, trait score) = +0.50 (95% CI +0.25 to +0.70), "
            "n = 60") in page
    assert ("<li>pos: trait 71.2 (95% CI 60.0 to 80.0, n = 99), coherence - (no interval, n = 0) of 100 answers</li>"
            in page)
    assert '<a href="sweep.html">steering sweep</a>' in page and '<a href="results.json">results.json</a>' in page
    assert "<li>kept 3 pos / 4 neg answers (paired filter)</li>" in page
    assert "&lt;evil&gt;" in page and "L2 c4 &middot; trait 90.0 &middot; coherence -" in page
    page = write_run_page(out, **args, judge_note="Scores from a <small> judge.").read_text()
    assert '<p class="note">Scores from a &lt;small&gt; judge.</p>' in page


def test_number_formats_missing_values_as_missing() -> None:
    assert number(71.25, ".1f") == "71.2" and number(0.5, "+.3f") == "+0.500" and number(4.0, "g") == "4"
    assert number(None, ".1f") == "-" and number(float("nan"), "+.2f") == "-" and number(None, ".3f", "n/a") == "n/a"


def test_every_page_extends_the_one_base_layout() -> None:
    pages = [p for p in TEMPLATES.glob("*.html") if p.name != "base.html" and not p.name.startswith("_")]
    assert {p.name for p in pages} == {"extraction.html", "monitor.html", "prompt_monitor.html", "sweep.html",
                                       "run.html", "organisms.html", "last_prompt_monitor.html"}
    for page in pages:
        assert page.read_text().startswith('{% extends "base.html" %}'), page.name
    assert sum("<style>" in p.read_text() for p in TEMPLATES.glob("*.html")) == 1


STRING_TOKENS = {tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}  # f-strings split in 3.12
HTML_TAG = re.compile(r"<(p|div|table|tr|td|th|span|h[1-6]|script|style|ul|li|a|b|i|code|br|button)[\s>]")


def test_no_python_source_writes_html() -> None:
    """Pages come from templates: no string literal in the project's Python holds an HTML tag."""
    found = []
    for folder in ("pv_harness", "tasks", "solvers", "scorers", "plugins", "datasets"):
        for path in (ROOT / folder).rglob("*.py"):
            if "build" in path.relative_to(ROOT).parts:
                continue
            for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
                if token.type in STRING_TOKENS and HTML_TAG.search(token.string):
                    found.append(f"{path.relative_to(ROOT)}:{token.start[0]}")
    assert not found


def test_monitor_page_gives_each_correlation_its_n_and_interval(tmp_path: Path) -> None:
    answers = [monitored(i, ["a", "b"], [0.1 * i, 0.2 * i], 10.0 * i + (5 if i % 2 else 0)) for i in range(1, 7)]
    answers.append(monitored(7, ["c"], [0.3], None))  # unscored: not a pair
    page = write_monitor_report(write_log(tmp_path / "m.eval", answers), tmp_path / "m.html").read_text()
    assert "(6 scored samples; 95% intervals by\nFisher's z, none under 4 pairs)" in page
    from pv_harness.estimates import correlation

    r = correlation([0.15 * i for i in range(1, 7)], [10.0 * i + (5 if i % 2 else 0) for i in range(1, 7)])
    assert f"mean: {r.value:+.2f} (95% CI {r.low:+.2f} to {r.high:+.2f}), n = 6;" in page
