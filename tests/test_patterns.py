"""Every name pattern matches the whole value: ``$`` also matches before a trailing newline, so
``secret: "demo/checkout\\n"`` passed ``^...$`` (issue 22, item 7). The mechanism: no pattern in rotator's
modules ends in ``$`` (``\\Z`` or ``fullmatch`` instead); pydantic ``Field(pattern=...)`` is exempt, as it runs
Rust's regex engine, where ``$`` is the end of the text."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import rotator

# a `$` at the end of a pattern, or before the `)` of a group/lookahead, in a raw-string regex literal
_DOLLAR_END = re.compile(r"""re\.(?:compile|match|search|fullmatch)\(\s*r?f?r?["'][^"']*\$(?:\)[^"']*)?["']""")


def _modules() -> list[str]:
    names = ["rotator"]
    for info in pkgutil.walk_packages(rotator.__path__, "rotator."):
        names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_no_compiled_pattern_of_a_module_ends_in_dollar(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ImportError:  # a backend whose extra is not installed: its source is scanned below
        pytest.skip(f"{name} needs an extra")
    for attr, value in vars(module).items():
        if isinstance(value, re.Pattern) and isinstance(value.pattern, str):
            p = value.pattern
            assert not p.endswith("$") and "$)" not in p, f"{name}.{attr} = {p!r}: use \\Z (or fullmatch)"


def test_no_inline_pattern_in_the_source_ends_in_dollar() -> None:
    root = Path(rotator.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        for m in _DOLLAR_END.finditer(text):
            found.append(f"{path.relative_to(root)}: {m.group(0)}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("secret", ["demo/checkout\n", "checkout\n"])
def test_a_secret_name_with_a_trailing_newline_is_a_config_error(tmp_path: Path, secret: str) -> None:
    import json

    from rotator.config import loads
    from rotator.errors import ConfigError

    config = {
        "issuer": {"type": "emulator"},
        "stores": {"local": {"type": "file", "path": str(tmp_path / "secrets")}},
        "policies": [{"name": "demo", "role": "viewer", "targets": [{"store": "local", "secret": secret}]}],
    }
    with pytest.raises(ConfigError) as err:
        loads(json.dumps(config))
    assert "secret" in str(err.value)
