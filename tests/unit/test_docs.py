"""docs/config.md is generated from the directive registry; this fails when it is stale.

Regenerate it with `python -m pyd.config.docs > docs/config.md`.
"""

from __future__ import annotations

from pathlib import Path

from pyd.config.docs import generate
from pyd.config.registry import REGISTRY

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_directive_reference_is_current():
    assert DOC.read_text() == generate(), (
        "docs/config.md is stale: run `python -m pyd.config.docs > docs/config.md`")


def test_directive_reference_names_every_directive_and_section():
    text = generate()
    for scope, table in REGISTRY.directives.items():
        for name in table:
            assert f"| `{name}` |" in text, (scope, name)
    for section in REGISTRY.sections:
        assert f"## {section.title}\n" in text


def test_the_language_reference_exists_and_is_linked():
    language = DOC.with_name("config-language.md")
    assert language.exists()
    assert "(config-language.md)" in generate()


def _blocks(markdown: str, heading: str) -> list[str]:
    """The fenced code blocks of one `## heading` section."""
    section = markdown.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [block.split("\n", 1)[1] for block in section.split("```")[1::2]]


def test_the_yaml_twin_example_is_the_same_config(tmp_path):
    from pyd.config import load

    conf, yaml_text = _blocks(DOC.with_name("config-language.md").read_text(), "The YAML twin")
    (tmp_path / "pyd.conf").write_text(conf)
    (tmp_path / "pyd.yaml").write_text(yaml_text)
    from_conf = load(str(tmp_path / "pyd.conf"), env={})
    assert load(str(tmp_path / "pyd.yaml"), env={}) == from_conf
    assert from_conf.section("App:shop").extras() == {"currency": ("EUR",)}
    assert from_conf.pools[0].blocks("location")[0].index == ("index.html", "home page.html")


def test_the_opening_example_is_a_valid_config(tmp_path):
    from pyd.config import load

    text = DOC.with_name("config-language.md").read_text()
    example = text.split("```nginx\n", 1)[1].split("```", 1)[0]
    (tmp_path / "pyd.conf").write_text(example)
    config = load(str(tmp_path / "pyd.conf"), env={})
    assert [loc.arg for loc in config.pools[0].blocks("location")] == ["/static/", "/"]


def test_the_readme_and_the_operations_page_name_every_command_and_signal():
    from pyd.cli.main import COMMANDS
    from pyd.master.arbiter import SIGNALS

    readme = (DOC.parent.parent / "README.md").read_text()
    operations = DOC.with_name("operations.md").read_text()
    listed = readme.split("`pyd --help` lists them: `", 1)[1].split("`", 1)[0].split()
    assert listed == [c.name for c in COMMANDS]
    for c in COMMANDS:
        assert f"`pyd {c.name}" in operations, c.name
    for name in SIGNALS:
        assert f"`{name}`" in operations, name
