"""Bad configuration is the commonest failure: each case is a clear message naming the line and key, exit 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from digest.config import load_config
from digest.errors import ConfigError
from tests.helpers import run_cli

REPO = Path(__file__).parent.parent

VALID = """\
arxiv:
  categories: [cs.CL, cs.LG]
llm:
  api_key: ${OPENAI_API_KEY}
profiles:
  - name: me
    email: [me@example.org]
    interests: |
      Language models.
    min_score: 6
"""


def _cli_error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    result = run_cli("run", "--config", str(path), env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr
    return result.stderr


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    error = _cli_error(tmp_path, VALID.replace("categories: [cs.CL, cs.LG]", "categories: [cs.CL, cs.LG"))
    assert "YAML syntax error" in error
    assert "line 3, column 4" in error
    assert "while parsing a flow sequence at line 2" in error


def test_unknown_key_suggests_the_closest_valid_key(tmp_path):
    error = _cli_error(tmp_path, VALID.replace("min_score: 6", "min_scor: 6"))
    assert "line 10: profiles[0].min_scor: unknown key; did you mean 'min_score'?" in error


def test_unknown_section_suggests_the_closest(tmp_path):
    error = _cli_error(tmp_path, VALID + "emial:\n  from: a@example.org\n")
    assert "emial: unknown key; did you mean 'email'?" in error


def test_wrong_type_names_the_key_and_the_value(tmp_path):
    error = _cli_error(tmp_path, VALID.replace("min_score: 6", "min_score: high"))
    assert "line 10: profiles[0].min_score: Input should be a valid integer" in error
    assert "'high'" in error


def test_out_of_range_value(tmp_path):
    error = _cli_error(tmp_path, VALID.replace("min_score: 6", "min_score: 12"))
    assert "profiles[0].min_score: Input should be less than or equal to 10 (found 12)" in error


def test_missing_environment_variable_is_named(tmp_path):
    error = _cli_error(tmp_path, VALID, env={"OPENAI_API_KEY": ""})
    assert "line 4: llm.api_key: environment variable OPENAI_API_KEY is not set" in error


def test_api_key_defaults_to_the_environment(tmp_path):
    error = _cli_error(
        tmp_path, VALID.replace("  api_key: ${OPENAI_API_KEY}\n", "  model: gpt-4o-mini\n"), {"OPENAI_API_KEY": ""}
    )
    assert "environment variable OPENAI_API_KEY is not set" in error


def test_empty_categories(tmp_path):
    error = _cli_error(tmp_path, VALID.replace("categories: [cs.CL, cs.LG]", "categories: []"))
    assert "arxiv.categories: List should have at least 1 item" in error


@pytest.mark.parametrize(
    ("category", "expected"),
    [
        ("cs.cl", "'cs.cl' is not an arXiv category (did you mean cs.CL?)"),
        ("sc.CL", "'sc.CL' is not an arXiv category (did you mean cs.CL?)"),
        ("cs.Computation", "'cs.Computation' is not an arXiv category: cs subjects are two letters"),
        ("cs CL", "'cs CL' is not an arXiv category"),
    ],
)
def test_invalid_category_name(tmp_path, category, expected):
    error = _cli_error(tmp_path, VALID.replace("cs.CL, cs.LG", f"'{category}'"))
    assert "arxiv.categories[0]" in error or "arxiv.categories" in error
    assert expected in error


def test_several_problems_are_reported_together(tmp_path):
    text = VALID.replace("min_score: 6", "min_score: -1").replace("cs.CL, cs.LG", "cs.XYZ")
    error = _cli_error(tmp_path, text)
    assert "2 problems" in error


def test_missing_file_says_what_to_do(tmp_path):
    result = run_cli("run", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "--config" in result.stderr


def test_the_config_path_comes_from_digest_config(tmp_path):
    result = run_cli("run", env={"DIGEST_CONFIG": str(tmp_path / "elsewhere.yaml")})
    assert result.returncode == 2
    assert "elsewhere.yaml" in result.stderr


def test_bad_usage_exits_2():
    result = run_cli("fly")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_a_secret_in_a_bad_value_is_not_printed(tmp_path):
    error = _cli_error(
        tmp_path,
        VALID.replace("api_key: ${OPENAI_API_KEY}", "api_key: [sk-secret-value]"),
    )
    assert "llm.api_key" in error
    assert "sk-secret-value" not in error


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    path = tmp_path / "sub" / "config.yaml"
    path.parent.mkdir()
    path.write_text(VALID + "state: state.db\noutput:\n  outbox: out\n")
    config = load_config(path, {"OPENAI_API_KEY": "sk-test-secret"})
    assert config.state == path.parent.resolve() / "state.db"
    assert config.output.outbox == path.parent.resolve() / "out"
    assert config.llm.api_key.get_secret_value() == "sk-test-secret"
    assert "sk-test-secret" not in repr(config) + str(config)


def test_left_out_the_state_and_the_outbox_are_beside_the_config_too(tmp_path, monkeypatch):
    """As the README says; they were relative to wherever digest was started."""
    path = tmp_path / "sub" / "config.yaml"
    path.parent.mkdir()
    path.write_text(VALID)
    monkeypatch.chdir(tmp_path)
    config = load_config(path, {"OPENAI_API_KEY": "sk-test"})
    assert config.state == path.parent.resolve() / "digest.sqlite3"
    assert config.output.outbox == path.parent.resolve() / "outbox"


def _example_config() -> str:
    """config.yaml as committed, not as a reader may have edited it in their checkout: no test depends on that."""
    committed = subprocess.run(["git", "show", "HEAD:config.yaml"], cwd=REPO, capture_output=True, text=True)
    return committed.stdout if committed.returncode == 0 else (REPO / "config.yaml").read_text()


def test_the_example_config_in_the_repository_is_valid(tmp_path):
    (tmp_path / "config.yaml").write_text(_example_config())
    config = load_config(tmp_path / "config.yaml", {"OPENAI_API_KEY": "k"})
    assert config.arxiv.categories == ["cs.CL", "cs.LG"]
    assert config.email.smtp is None


def test_smtp_without_recipients_is_rejected(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(VALID.replace("    email: [me@example.org]\n", "") + "email:\n  smtp:\n    host: localhost\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path, {"OPENAI_API_KEY": "k"})
    assert "profile me has no email addresses" in str(raised.value)


def test_a_value_of_the_wrong_kind_is_named_with_what_to_write(tmp_path):
    text = VALID.replace("min_score: 6", "min_score: high") + "email:\n  from: not-an-address\n"
    text = text.replace("  categories: [cs.CL, cs.LG]", "  categories: cs.CL\n  max_retry_seconds: [1]")
    error = _cli_error(tmp_path, text)
    assert "profiles[0].min_score: Input should be a valid integer" in error and "write a whole number, like 6" in error
    assert "email.from: 'not-an-address' is not an email address" in error
    assert "arxiv.max_retry_seconds:" in error and "write a number, like 2.5" in error


def test_the_default_sender_at_localhost_is_accepted(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(VALID + "email:\n  from: digest@localhost\n")
    assert load_config(path, {"OPENAI_API_KEY": "k"}).email.from_ == "digest@localhost"
