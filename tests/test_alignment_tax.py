"""The suite file, and alignment_tax end to end: the tiny model against a perturbed copy saved as a run."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from eval.alignment_tax import alignment_tax, main, model_label, resolve_tuned
from eval.multiple_choice import evaluate_multiple_choice, read_subject_csv
from eval.suite import CMRCProbe, DriftProbe, MultipleChoiceProbe, load_suite
from grpo.run.checkpoint import save_checkpoint
from grpo.run.errors import ConfigError, ModelError

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
REPO_ROOT = Path(__file__).resolve().parent.parent


def write_suite(path: Path, extra: str = "", mc_folder: Path = FIXTURES / "mmlu_flat", k_shot: int = 1,
                scoring: str = "answer") -> Path:
    path.write_text(f"""
[drift]
kind = "drift"
texts = "{FIXTURES / 'drift_texts.jsonl'}"
max_tokens = 32

[mmlu]
kind = "multiple_choice"
folder = "{mc_folder}"
split = "test"
k_shot = {k_shot}
scoring = "{scoring}"

[cmrc]
kind = "cmrc"
file = "{FIXTURES / 'cmrc2018_tiny.json'}"
max_new_tokens = 4

[ceval]
kind = "multiple_choice"
folder = "{path.parent / 'no-such-folder'}"
optional = true
{extra}""", encoding="utf-8")
    return path


def test_suite_file_builds_typed_probes(tmp_path):
    suite = load_suite(write_suite(tmp_path / "suite.toml"))
    assert list(suite.drift) == ["drift"] and list(suite.benchmarks) == ["mmlu", "cmrc"]
    assert isinstance(suite.drift["drift"], DriftProbe) and suite.drift["drift"].max_tokens == 32
    assert isinstance(suite.benchmarks["mmlu"], MultipleChoiceProbe) and suite.benchmarks["mmlu"].k_shot == 1
    assert isinstance(suite.benchmarks["cmrc"], CMRCProbe) and suite.benchmarks["cmrc"].max_new_tokens == 4
    assert "no-such-folder" in suite.skipped["ceval"]


def test_default_suite_parses():
    from grpo.run.config import read_toml

    tables = read_toml(REPO_ROOT / "configs" / "alignment_suite.toml")
    assert {name: table["kind"] for name, table in tables.items()} == {
        "drift": "drift", "mmlu": "multiple_choice", "cloze": "cloze", "cmrc": "cmrc"}
    assert tables["cmrc"]["optional"] is True
    assert tables["mmlu"]["scoring"] == "answer"
    assert "max_examples" not in tables["cmrc"]      # the whole CMRC file is scored
    assert CMRCProbe().max_examples == 0 and MultipleChoiceProbe().scoring == "answer"


@pytest.mark.parametrize("extra, message", [
    ('[bad]\nkind = "drift"\ntexts = "x.jsonl"\nmax_tokns = 3\n', r"\[bad\].*unknown config key 'max_tokns'"),
    ('[bad]\nkind = "essay"\n', r"\[bad\] needs kind = one of"),
    ('[bad]\nkind = "multiple_choice"\nfolder = "/no/such/folder"\n', r"probe \[bad\].*does not exist.*optional"),
    ('[bad]\nkind = "multiple_choice"\nsplit = "train"\n', r"\[bad\].*'split' must be one of"),
    ('[bad]\nkind = "multiple_choice"\nscoring = "cloze"\n', r"\[bad\].*'scoring' must be one of"),
])
def test_suite_mistakes_are_config_errors(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_suite(write_suite(tmp_path / "suite.toml", extra))


def test_tax_and_labels():
    assert alignment_tax(46.97, 41.82) == pytest.approx(5.15)
    assert model_label("runs/grpo/", "runs/grpo/checkpoints/step-000100") == "runs/grpo@step-000100"
    assert model_label("smollm2-135m", "smollm2-135m") == "smollm2-135m"


def test_run_folder_without_checkpoint_is_a_model_error(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ModelError, match="no complete checkpoint"):
        resolve_tuned(str(tmp_path))
    assert resolve_tuned("smollm2-135m") == "smollm2-135m"


@pytest.fixture(scope="module")
def perturbed_run(tmp_path_factory):
    """A run folder whose checkpoints hold the tiny model with Gaussian noise (std 0.02) on every weight."""
    from grpo.run.models import load_model

    model, tokenizer = load_model("tiny-random-llama")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    run_dir = tmp_path_factory.mktemp("run")
    save_checkpoint(run_dir, 1, model, tokenizer, state={})
    save_checkpoint(run_dir, 2, model, tokenizer, state={})
    return run_dir


def questions_the_base_gets_right(folder: Path, tiny) -> Path:
    """The fixture's MMLU questions with each answer set to the base model's letter: base accuracy is 100."""
    model, tokenizer = tiny
    questions = read_subject_csv(FIXTURES / "mmlu_flat" / "astronomy_test.csv", "astronomy")
    (folder / "test").mkdir(parents=True)
    path = folder / "test" / "astronomy_test.csv"

    def write(answers):
        lines = ["question,A,B,C,D,answer"] + [",".join([f'"{q.question}"', *q.options, a])
                                               for q, a in zip(questions, answers)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    write(["A"] * len(questions))
    _, rows = evaluate_multiple_choice(model, tokenizer, folder, split="test", progress=False, scoring="letter")
    write([row["predicted"] for row in rows])
    return folder


def test_end_to_end_tax_is_base_minus_tuned(tmp_path, tiny, perturbed_run, capsys):
    mc_folder = questions_the_base_gets_right(tmp_path / "mc", tiny)
    # Letter scoring: the perturbed model's letter preferences move, its choices of answer text do not here.
    suite = write_suite(tmp_path / "suite.toml", mc_folder=mc_folder, k_shot=0, scoring="letter")
    out = tmp_path / "out"
    code = main(["--base", "tiny-random-llama", "--tuned", str(perturbed_run), "tiny-random-llama",
                 "--suite", str(suite), "--out", str(out), "--quiet"])
    assert code == 0
    report = json.loads((out / "alignment_tax.json").read_text(encoding="utf-8"))
    base = report["base"]["headline"]
    perturbed, same = report["tuned"]
    assert perturbed["label"] == f"{perturbed_run}@step-000002"
    assert perturbed["path"].endswith("checkpoints/step-000002")
    assert base["mmlu"] == 100.0
    # The perturbed model prefers other letters, so it pays a tax: 100 - its accuracy.
    assert perturbed["tax"]["mmlu"] == pytest.approx(100.0 - perturbed["headline"]["mmlu"])
    assert perturbed["tax"]["mmlu"] > 0
    assert perturbed["tax"]["cmrc"] == pytest.approx(base["cmrc"] - perturbed["headline"]["cmrc"])
    assert perturbed["tax"]["average"] == pytest.approx((perturbed["tax"]["mmlu"] + perturbed["tax"]["cmrc"]) / 2)
    assert base["mmlu"] == report["base"]["scores"]["mmlu"]["accuracy"]
    assert base["cmrc"] == report["base"]["scores"]["cmrc"]["avg"]
    assert perturbed["drift"]["drift"]["kl_mean"] > 0
    # The base model against itself: no tax, no drift.
    assert same["tax"] == {"mmlu": 0.0, "cmrc": 0.0, "average": 0.0}
    assert same["drift"]["drift"]["kl_p90"] == 0.0 and same["drift"]["drift"]["nll_increase_mean"] == 0.0
    assert report["skipped"] == {"ceval": f"its data '{tmp_path / 'no-such-folder'}' does not exist"}

    printed = capsys.readouterr().out
    assert "## Alignment tax (base - tuned" in printed and f"{perturbed_run}@step-000002" in printed
    assert (out / "alignment_tax.md").read_text(encoding="utf-8") in printed
    arrays = np.load(out / "drift_drift.npz")
    assert len(arrays.files) == 4 and (arrays["tiny-random-llama__kl"] == 0).all()
    rows = (out / "predictions" / "base-tiny-random-llama" / "mmlu.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 2
    assert (out / "tax.png").stat().st_size > 0 and (out / "nll_increase_drift.png").stat().st_size > 0


def test_user_errors_exit_with_a_message(tmp_path, capsys):
    code = main(["--base", "tiny-random-llama", "--tuned", "x", "--suite", str(tmp_path / "none.toml"),
                 "--out", str(tmp_path / "out")])
    assert code == 2
    assert "suite file" in capsys.readouterr().err


def test_base_model_alone_gets_every_score_and_no_tax(tmp_path):
    suite = write_suite(tmp_path / "suite.toml")
    out = tmp_path / "out"
    assert main(["--base", "tiny-random-llama", "--suite", str(suite), "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "alignment_tax.json").read_text(encoding="utf-8"))
    assert report["tuned"] == []
    mmlu, cmrc = report["base"]["scores"]["mmlu"], report["base"]["scores"]["cmrc"]
    assert set(mmlu) == {"n", "accuracy", "accuracy_raw", "accuracy_norm"} and mmlu["n"] == 3
    assert report["base"]["headline"]["cmrc"] == cmrc["avg"] == pytest.approx((cmrc["em"] + cmrc["f1"]) / 2)
    table = (out / "alignment_tax.md").read_text(encoding="utf-8")
    assert "## Alignment tax" not in table and "## Drift from the base" not in table
    assert "| model | n | em | f1 | avg |" in table
    assert f"| base: tiny-random-llama | 3 | {cmrc['em']:.2f} | {cmrc['f1']:.2f} | {cmrc['avg']:.2f} |" in table
    assert (f"| base: tiny-random-llama | 3 | {mmlu['accuracy']:.2f} | {mmlu['accuracy_raw']:.2f} | "
            f"{mmlu['accuracy_norm']:.2f} |") in table
    assert "Drift probes `drift` not run" in table
    assert not list(out.glob("*.npz")) and not list(out.glob("*.png"))


def test_help_says_how_to_supply_cmrc(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    printed = " ".join(capsys.readouterr().out.split())
    assert "cmrc2018_dev.json" in printed and "[cmrc] table of the suite" in printed
    assert "Without `--tuned` only the base model's scores are measured" in printed
