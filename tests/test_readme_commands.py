"""Every command of the README runs as written (issue 16, case 15).

Every ``semrec`` line of the README's shell blocks (and the ``semrec`` part of its ``torchrun`` line) is parsed by
the real command line: the command and its options exist, their values have the right type; for the commands
that read a config, the config is resolved (config files, ``--set`` keys) and its tokenizer or model parameters
are checked by the tokenizer's constructor or the model's config class; option values the command checks later
(index kinds, checkpoints) are checked here. The cheap ones are then run for real on the real datasets, on fake
text embeddings (the encoder and the slow tokenizers are tested elsewhere). ``semrec`` commands quoted inline in
the prose must name existing commands and options.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import typer.main
from typer.testing import CliRunner

import semrec.config
from semrec.cli import app
from tests.support import embed_vectors, shared_data_root

try:  # typer >= 0.20 carries its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CLI = typer.main.get_command(app)
runner = CliRunner()


def shell_lines() -> list[list[str]]:
    """The command lines of the README's ```bash blocks, split as a shell would, comments dropped."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():  # a trailing backslash continues the line
            words = shlex.split(line, comments=True)
            if words:
                lines.append(words)
    return lines


def semrec_args(words: list[str]) -> list[str] | None:
    """The arguments after ``semrec`` (or ``python -m semrec.cli`` under torchrun); None for other programs."""
    if words[0] == "semrec":
        return words[1:]
    if "-m" in words and words[words.index("-m") + 1] == "semrec.cli":
        return words[words.index("-m") + 2:]
    return None


COMMANDS = [args for args in map(semrec_args, shell_lines()) if args is not None]
INLINE = sorted({m for m in re.findall(r"`(semrec [^`]+)`", README)})


def test_the_readme_has_the_commands_this_test_knows():
    assert len(COMMANDS) >= 25
    assert {args[0] for args in COMMANDS} >= {"prepare", "info", "embed", "codes", "train", "evaluate", "pretrain",
                                              "finetune", "recommend", "export", "serve", "quickstart"}
    others = [words for words in shell_lines() if semrec_args(words) is None]
    for words in others:  # the set-up commands: make targets that exist
        assert words[0] == "make" and re.search(rf"^{re.escape(words[1])}:", (ROOT / "Makefile").read_text(),
                                                re.M), words


def parse(args: list[str]) -> dict:
    """The command's parameters as the command line parses them (click errors for unknown commands/options)."""
    name, rest = args[0], args[1:]
    assert name in CLI.commands, f"unknown command {name!r}"
    return CLI.commands[name].make_context(name, list(rest)).params


class _Resolved(Exception):
    pass


def resolved_config(args: list[str], monkeypatch) -> object:
    """The config a command resolves from these arguments (the command is stopped right after)."""
    seen = []
    real = semrec.config.load_config

    def capture(*a, **kw):
        seen.append(real(*a, **kw))
        raise _Resolved

    # semrec.api binds load_config when first imported: import it before the patch (else it would keep the capture
    # for good and break later tests in this process), and capture its calls too
    api = importlib.import_module("semrec.api")
    monkeypatch.setattr(semrec.config, "load_config", capture)
    monkeypatch.setattr(api, "load_config", capture)
    result = runner.invoke(app, args)
    monkeypatch.setattr(semrec.config, "load_config", real)
    monkeypatch.setattr(api, "load_config", real)
    assert isinstance(result.exception, _Resolved), (args, result.output, result.exception)
    return seen[0]


def check_config(config: object) -> None:
    """The parameters the config hands on are accepted by what reads them."""
    from semrec.config import CodesConfig, PrepareConfig, RunConfig, from_dict
    from semrec.data.sources import SOURCES
    from semrec.models import model_entry
    from semrec.tokenizers import build_tokenizer

    if isinstance(config, CodesConfig):
        build_tokenizer(config.tokenizer, dedup=config.dedup, **config.params)
    elif isinstance(config, RunConfig):
        from_dict(model_entry(config.model).config_class, config.model_params, prefix="model_params.")
    elif isinstance(config, PrepareConfig):
        assert config.format == "auto" or config.format in SOURCES, config.format
        source = config.source
        if source.startswith("../shared/data/") and shared_data_root().is_dir():
            assert (shared_data_root() / source.removeprefix("../shared/data/")).exists(), source


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a) for a in COMMANDS])
def test_readme_command_is_valid(args, monkeypatch):
    from semrec.serve.index import APPROX_KINDS, index_params

    monkeypatch.chdir(ROOT)  # config files are named relative to the repository
    params = parse(args)
    name = args[0]
    if name in ("prepare", "embed", "codes", "pretrain", "finetune") or (name == "train" and not params["resume"]):
        check_config(resolved_config(args, monkeypatch))
    elif name == "export":
        index_params(params["approx"], dict(p.split("=", 1) for p in params["param"] or []))
    elif name == "serve":
        assert params["retrieval"] == "exact" or params["retrieval"] in APPROX_KINDS
        assert 0 < params["port"] < 65536
    elif name == "evaluate":
        assert params["checkpoint"] in ("best", "last")
    elif name == "recommend":
        given = [params[key] for key in ("history", "item", "history_file", "user") if params[key]]
        assert len(given) == 1 and params["k"] >= 1  # exactly one way to give the history


@pytest.mark.parametrize("text", INLINE)
def test_inline_semrec_commands_name_existing_commands_and_options(text):
    """Prose quotes commands without their arguments (``semrec evaluate --exclude-history``): only a missing
    argument is tolerated."""
    import typer

    args = shlex.split(text)[1:]
    try:
        parse(args)
    except click_errors.MissingParameter:
        pass
    except typer.Exit as exc:  # `semrec CMD --help` prints the help and exits 0
        assert "--help" in args and exc.exit_code == 0


def test_a_wrong_parameter_fails_this_check(monkeypatch):
    """The check catches the kind of error the README had (kmeans has no n_clusters)."""
    from semrec.errors import SemrecError

    monkeypatch.chdir(ROOT)
    with pytest.raises(SemrecError, match="unknown parameter 'n_clusters' for tokenizer 'kmeans'"):
        check_config(resolved_config(["codes", "data/Scientific", "-t", "kmeans", "-p", "n_clusters=256"],
                                     monkeypatch))
    with pytest.raises(click_errors.NoSuchOption):
        parse(["export", "runs/x", "--aprox", "hnsw"])
    with pytest.raises(click_errors.BadParameter):
        parse(["recommend", "runs/x", "--k", "ten", "--user", "1"])


# ----- for real -------------------------------------------------------------------------------------------

RUN_FOR_REAL = [  # every README line cheap enough for a test, in README order (<run>: the run trained here)
    "prepare ../shared/data/amazon2018_Scientific_lcrec --name Scientific",
    "prepare ../shared/data/amazon2023_All_Beauty_5core --name All_Beauty",
    "prepare ../shared/data/ml-100k --format movielens",
    "info data/Scientific",
    "codes data/Scientific -t kmeans -p k=256",
    "train -c configs/sasrec/ml-100k.yaml --set train.epochs=50",
    "evaluate runs/<run> --exclude-history",
    "recommend runs/<run> --history 50,181 --k 10",
    "recommend runs/<run> --user 196",
    "export runs/<run> --approx hnsw",
]
# a training line runs for a few steps only (appended overrides win over the line's own)
TRAIN_BUDGET = ["--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=2", "--set", "train.progress=false"]


def fake_embeddings(folder: Path, dim: int = 32) -> None:
    """Deterministic stand-ins for 'semrec embed' (one random unit vector per distinct text of each view)."""
    from semrec.data.dataset import ALL_VIEW, CanonicalDataset

    dataset = CanonicalDataset.load(folder)
    rng = np.random.default_rng(0)
    matrices = {}
    for view in [*dataset.views, ALL_VIEW]:
        texts = np.asarray(dataset.view_texts(view), dtype=object)
        distinct, inverse = np.unique(texts, return_inverse=True)
        vectors = rng.standard_normal((len(distinct), dim)).astype(np.float32)[inverse]
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        matrices[view] = vectors
    embed_vectors(folder, matrices, "tests.readme_commands")


@pytest.mark.slow
def test_readme_commands_run_for_real(shared_data, tmp_path, monkeypatch):
    lines = [" ".join(args) for args in COMMANDS]
    missing = [line for line in RUN_FOR_REAL if line not in lines]
    assert not missing, f"README lines changed: update RUN_FOR_REAL ({missing})"
    repo = tmp_path / "repo"  # a checkout-like folder: configs/ here, the datasets in ../shared/data
    repo.mkdir()
    (repo / "configs").symlink_to(ROOT / "configs")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(shared_data)
    monkeypatch.chdir(repo)
    run = None
    for line in RUN_FOR_REAL:
        args = shlex.split(line)
        if run is not None:
            args = [a.replace("runs/<run>", str(run)) for a in args]
        if args[0] == "train":
            args += TRAIN_BUDGET
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (line, result.output)
        if args[0] == "prepare" and "Scientific" in line:
            fake_embeddings(Path("data/Scientific"))  # stands for 'semrec embed data/Scientific'
        if args[0] == "train":
            run = Path(re.search(r"run folder (\S+)", result.output).group(1))
            assert (run / "results.json").is_file()
        if args[0] == "recommend":
            ranked = [line for line in result.output.splitlines() if re.match(r"\s+\d+\s", line)]
            assert len(ranked) == 10 and "unknown" not in result.output, result.output
    assert (repo / "data" / "Scientific" / "codes" / "kmeans" / "codes.npy").is_file()
    assert (run / "export" / "approx.index").is_file()
