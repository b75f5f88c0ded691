"""Shell completion: ``rotator completion bash|zsh|fish`` (rotator.runtime.completion, shtab; issue 25).

Each script is run in its shell when that shell is installed, completing what a user would type:

- bash: the script is sourced and its function called with ``COMP_WORDS``/``COMP_CWORD``, as bash does;
- zsh: an interactive zsh in a pseudo-terminal (``zsh/zpty``) loads the script from ``fpath`` with
  ``compinit`` and presses TAB; a ``compadd`` wrapper prints what would be offered;
- fish: ``complete -C LINE`` prints the completions of LINE.

Every shell is run for real: `make test-tools` installs zsh and fish (bash is the machine's); a shell that is
missing fails the test with the command that installs it, never a skip. The scripts' text is checked
for every shell whatever is installed: the commands, options, choices and the policy-name function in it.
Policy names come from the config the command line names (``-c``/``--config``, else ``$ROTATOR_CONFIG``) via
``rotator completion --policy-names``, which is tested on its own too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rotator.runtime import completion
from rotator.runtime.cli import _parser, main

COMMANDS = ["audit", "completion", "emulator", "once", "plan", "rotate", "run", "schema", "status", "validate"]
CONFIG = """\
issuer: {type: emulator}
stores: {local: {type: file, path: ./secrets}}
policies:
  - {name: checkout-api, role: operator, targets: [{store: local, secret: a}]}
  - {name: billing, role: operator, lifetime: 1s, targets: [{store: local, secret: b}]}  # invalid: names still come
  - {name: "$(touch pwned)", role: operator, targets: [{store: local, secret: c}]}
  - {name: "Not A Name", role: operator, targets: [{store: local, secret: d}]}
"""
NAMES = ["checkout-api", "billing"]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A directory with a config and a ``rotator`` on PATH that runs this checkout."""
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    (tmp_path / "other.yaml").write_text(CONFIG.replace("checkout-api", "other-api"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "rotator"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m rotator.runtime.cli "$@"\n')
    shim.chmod(0o755)
    return tmp_path


def _env(work: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ROTATOR_CONFIG"}
    env.update(PATH=f"{work / 'bin'}{os.pathsep}{env.get('PATH', '')}", HOME=str(work), **extra)
    return env


def _script(shell: str) -> str:
    return completion.script(_parser(), shell)


# ---- policy names ------------------------------------------------------------------------------------------


def test_policy_names_are_the_valid_names_of_the_config_even_an_invalid_one(work: Path) -> None:
    assert completion.policy_names(work / "cfg.yaml") == NAMES


@pytest.mark.parametrize(
    "text",
    ["", "[1, 2]", "policies: 3", "policies: [{name: 3}]", "a: [", "policies:\n  - name: ${UNSET_VARIABLE_XYZ}\n"],
)
def test_policy_names_of_an_unreadable_config_are_none(tmp_path: Path, text: str) -> None:
    (tmp_path / "c.yaml").write_text(text)
    assert completion.policy_names(tmp_path / "c.yaml") == []
    assert completion.policy_names(tmp_path / "missing.yaml") == []


def test_the_hidden_option_prints_the_names_of_the_config_the_command_would_use(
    work: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["completion", "--policy-names", "-c", str(work / "cfg.yaml")]) == 0
    assert capsys.readouterr().out.split() == NAMES
    monkeypatch.setenv("ROTATOR_CONFIG", str(work / "other.yaml"))
    assert main(["completion", "--policy-names"]) == 0
    assert capsys.readouterr().out.split() == ["other-api", "billing"]
    monkeypatch.setenv("HOME", str(work))
    assert main(["-c", "~/cfg.yaml", "completion", "--policy-names"]) == 0  # ~ as a shell leaves it unexpanded
    assert capsys.readouterr().out.split() == NAMES


def test_completion_without_a_shell_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion"]) == 2
    assert "rotator completion bash, zsh or fish" in capsys.readouterr().err
    assert main(["completion", "tcsh"]) == 2
    assert "invalid choice: 'tcsh'" in capsys.readouterr().err


@pytest.mark.parametrize("shell", completion.SHELLS)
def test_the_command_prints_the_script(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", shell]) == 0
    assert capsys.readouterr().out == _script(shell)


# ---- the scripts' text (every shell, installed or not) ----------------------------------------------------


@pytest.mark.parametrize("shell", completion.SHELLS)
def test_each_script_names_every_command_option_and_choice(shell: str) -> None:
    text = _script(shell)
    for command in COMMANDS:
        assert command in text, command
    for option in ("--config", "--policy", "--shard", "--emergency", "--online", "--html", "--with-plugins"):
        assert option.lstrip("-") in text, option
    for choice in ("debug", "warning", "bash", "zsh", "fish"):
        assert choice in text, choice
    assert "--policy-names" not in text.replace("completion --policy-names", "")  # hidden: only the function calls it
    # the policy-name function is defined, and wired to -p/--policy and to rotate's POLICY
    assert text.count("_rotator_policy_names") >= 3
    assert "completion --policy-names" in text


def test_the_bash_script_wires_policy_names_and_files() -> None:
    text = _script("bash")
    assert "_shtab_rotator_rotate_pos_0_COMPGEN=_rotator_policy_names" in text
    assert "_shtab_rotator_once___policy_COMPGEN=_rotator_policy_names" in text
    assert "_shtab_rotator_plan__c_COMPGEN=_shtab_compgen_files" in text
    assert "_shtab_rotator_status___html_COMPGEN=_shtab_compgen_files" in text
    assert text.rstrip().endswith("complete -o bashdefault -F _shtab_rotator rotator")


def test_the_zsh_script_wires_policy_names_and_files() -> None:
    text = _script("zsh")
    assert text.startswith("#compdef rotator")
    assert ":POLICY:_rotator_policy_names" in text
    assert "{-p,--policy}" in text and ":NAME:_rotator_policy_names" in text
    assert "{-c,--config}" in text and ":_files" in text


def test_the_fish_script_wires_policy_names_and_files() -> None:
    text = _script("fish")
    assert "complete -c rotator -n '_shtab_rotator_using rotate; and test $_shtab_rotator_npos -eq 0'" in text
    assert '-ka "(_rotator_policy_names)"' in text
    assert '-xka "(_rotator_policy_names)"' in text
    assert "(__fish_complete_path (commandline -ct))" in text


def _need(shell: str) -> None:
    if shutil.which(shell) is None:
        pytest.fail(f"{shell} is not installed: `make test-tools` installs it (zsh, fish: Debian's packages)")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_script_parses_in_its_shell(shell: str, tmp_path: Path) -> None:
    _need(shell)
    path = tmp_path / f"rotator.{shell}"
    path.write_text(_script(shell))
    flag = ["--no-execute"] if shell == "fish" else ["-n"]
    r = subprocess.run([shell, *flag, str(path)], capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 0, r.stderr


# ---- the scripts in their shells --------------------------------------------------------------------------

#: (command line up to the cursor, what must be offered)
CASES = [
    ("rotator ", COMMANDS),
    ("rotator pl", ["plan"]),
    ("rotator completion ", ["bash", "fish", "zsh"]),
    ("rotator --log-level ", ["debug", "error", "info", "warning"]),
    ("rotator -c cfg.yaml rotate ", sorted(NAMES)),
    ("rotator rotate -c cfg.yaml ", sorted(NAMES)),
    ("rotator plan --config=cfg.yaml -p ", sorted(NAMES)),
    ("rotator once -c cfg.yaml --policy b", ["billing"]),
    ("rotator -c other.yaml status -p ", sorted(["other-api", "billing"])),
    ("rotator -c cf", ["cfg.yaml"]),
]
#: options a subcommand must offer after ``rotator plan --``
PLAN_OPTIONS = {"--all", "--json", "--config", "--policy", "--shard", "--now", "--log-level", "--help"}


def _check(shell: str, offered: dict[str, list[str]], work: Path) -> None:
    for line, expected in CASES:
        assert sorted(offered[line]) == expected, (shell, line, offered[line])
    assert set(offered["rotator plan --"]) >= PLAN_OPTIONS, offered["rotator plan --"]
    assert not (work / "pwned").exists(), "a policy name was run as a command"


_BASH = r"""
source "$1"
shift
COMP_WORDS=("$@")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
_shtab_rotator
printf '%s\n' "${COMPREPLY[@]}"
"""


def _bash(work: Path, line: str) -> list[str]:
    # as bash gives them: split at spaces and at '=' (COMP_WORDBREAKS: --config=FILE is three words), and a
    # trailing space leaves an empty word to complete
    words = line.replace("=", " = ").split(" ")
    script = work / "rotator.bash"
    r = subprocess.run(
        ["bash", "-c", _BASH, "_", str(script), *words],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=work,
        env=_env(work),
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return [w for w in r.stdout.split("\n") if w]


def test_bash_completes_commands_options_and_policy_names(work: Path) -> None:
    _need("bash")
    (work / "rotator.bash").write_text(_script("bash"))
    lines = [line for line, _ in CASES] + ["rotator plan --"]
    _check("bash", {line: _bash(work, line) for line in lines}, work)


_ZSH_INIT = r"""
PS1='' PROMPT='' RPROMPT=''
fpath=("$COMPLETION_DIR" $fpath)
autoload -Uz compinit && compinit -u -D
zstyle ':completion:*' list-grouped false
zstyle ':completion:*' insert-tab false
compadd() {
  # print what this call would offer (unless it only collects matches for a caller), then offer it
  if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return; fi
  local -a __offered
  builtin compadd -O __offered "$@"
  (( $#__offered )) && print -rl -- "OFFERED:"${^__offered}
  builtin compadd "$@"
}
_capture_done() { print -r -- "CAPTURE-DONE"; exit }
comppostfuncs=(_capture_done)
bindkey '^I' complete-word
print -r -- "CAPTURE-READY"
"""

_ZSH_DRIVE = r"""
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "source ${(q)1}"
local line
while zpty -r z line; do [[ $line == *CAPTURE-READY* && $line != *print* ]] && break; done
zpty -w -n z "$2"$'\t'
while zpty -r z line; do
  [[ $line == *CAPTURE-DONE* ]] && break
  [[ $line == *OFFERED:* ]] && print -r -- "${${line##*OFFERED:}%%[[:space:]]#}"
done
zpty -d z
"""


def _zsh(work: Path, line: str) -> list[str]:
    r = subprocess.run(
        ["zsh", "-f", "-c", _ZSH_DRIVE, "_", str(work / "init.zsh"), line],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=work,
        env=_env(work, COMPLETION_DIR=str(work / "zsh")),
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return [w.strip() for w in r.stdout.splitlines() if w.strip()]


def test_zsh_completes_commands_options_and_policy_names(work: Path) -> None:
    _need("zsh")
    (work / "zsh").mkdir()
    (work / "zsh" / "_rotator").write_text(_script("zsh"))
    (work / "init.zsh").write_text(textwrap.dedent(_ZSH_INIT))
    lines = [line for line, _ in CASES] + ["rotator plan --"]
    _check("zsh", {line: _zsh(work, line) for line in lines}, work)


def _fish(work: Path, line: str) -> list[str]:
    r = subprocess.run(
        ["fish", "--no-config", "-c", "source $argv[1]; complete -C $argv[2]", str(work / "rotator.fish"), line],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=work,
        env=_env(work),
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return [w.split("\t")[0] for w in r.stdout.splitlines() if w]


def test_fish_completes_commands_options_and_policy_names(work: Path) -> None:
    _need("fish")
    (work / "rotator.fish").write_text(_script("fish"))
    lines = [line for line, _ in CASES] + ["rotator plan --"]
    _check("fish", {line: _fish(work, line) for line in lines}, work)
