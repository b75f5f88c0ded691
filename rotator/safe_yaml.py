"""Reading a config file as a careless or hostile user may have written it.

One way in, :func:`load_file` (or :func:`load_bytes` for YAML that did not come from a file):

1. the file is opened without blocking and must be a regular file (a FIFO, a device or a directory is
   refused before anything is read) no larger than ``max_bytes`` (1 MiB unless ``ROTATOR_CONFIG_MAX_BYTES``
   says otherwise); at most ``max_bytes + 1`` bytes are ever read;
2. the bytes are decoded as UTF-8, a UTF-8 byte-order mark is accepted, and anything else (UTF-16, latin-1,
   binary) is an error naming the byte offset, line and column;
3. the YAML is parsed (libyaml's ``CSafeLoader`` when it is available) with a nesting limit and a limit on
   what anchors and aliases expand to, so neither deep nesting nor a "billion laughs" document can exhaust
   the stack or the memory;
4. a mapping that repeats a key is an error (YAML says keys are unique; PyYAML silently keeps the last);
5. ``${VAR}`` and ``${VAR:-default}`` in scalar values are expanded from the environment, and a ``${VAR}``
   that is unset or empty with no default is an error naming the field. A plain (unquoted) scalar that
   was expanded is typed again, so ``port: ${PORT}`` is still a number.

Every failure is a :class:`rotator.errors.ConfigError` (exit code 2) whose issues name where the problem is.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from rotator.errors import ConfigError, ConfigIssue

try:  # libyaml: ~10x faster than the pure-Python parser, same safe constructor
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - libyaml is in the wheels for every platform we build on
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

#: the largest config file read (bytes); ROTATOR_CONFIG_MAX_BYTES overrides it
MAX_BYTES = 1 << 20
MAX_BYTES_ENV = "ROTATOR_CONFIG_MAX_BYTES"
#: collections nested deeper than this are refused (a config needs about 6)
MAX_DEPTH = 64
#: a document whose nodes, with every alias expanded, number more than this is refused
MAX_NODES = 200_000

_BOMS = {
    b"\xef\xbb\xbf": None,  # UTF-8: accepted
    b"\x00\x00\xfe\xff": "UTF-32 (big-endian)",
    b"\xff\xfe\x00\x00": "UTF-32 (little-endian)",
    b"\xfe\xff": "UTF-16 (big-endian)",
    b"\xff\xfe": "UTF-16 (little-endian)",
}
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _fail(message: str, source: str | None, path: str = "") -> ConfigError:
    return ConfigError([ConfigIssue(path, message)], source=source)


def max_bytes_from_env(environ: Mapping[str, str] | None = None) -> int:
    """The size cap: ``$ROTATOR_CONFIG_MAX_BYTES`` (a positive integer) or :data:`MAX_BYTES`."""
    env = os.environ if environ is None else environ
    text = env.get(MAX_BYTES_ENV, "").strip()
    if not text:
        return MAX_BYTES
    if not text.isdigit() or int(text) < 1:
        raise _fail(f"must be a positive number of bytes, e.g. {MAX_BYTES}, not {text[:20]!r}", None, MAX_BYTES_ENV)
    return int(text)


def read_file(path: str | Path, *, max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``. Never blocks on a FIFO, never reads more than
    ``max_bytes + 1`` bytes. Raises ConfigError."""
    p = Path(path)
    limit = max_bytes_from_env() if max_bytes is None else max_bytes
    src = str(p)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise _fail(f"cannot read {p}: {exc.strerror or type(exc).__name__}; pass --config PATH", src) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = (
                "a directory"
                if stat.S_ISDIR(st.st_mode)
                else "a FIFO"
                if stat.S_ISFIFO(st.st_mode)
                else "a socket"
                if stat.S_ISSOCK(st.st_mode)
                else "a device"
                if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "not a regular file"
            )
            raise _fail(f"{p} is {kind}, not a regular file: pass --config with a YAML file", src)
        if st.st_size > limit:
            raise _fail(_too_big(p, st.st_size, limit), src)
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 16, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:  # it grew while we read it
            raise _fail(_too_big(p, size, limit), src)
        return b"".join(chunks)
    except OSError as exc:
        raise _fail(f"cannot read {p}: {exc.strerror or type(exc).__name__}; pass --config PATH", src) from None
    finally:
        os.close(fd)


def _too_big(p: Path, size: int, limit: int) -> str:
    return (
        f"{p} is {'more than ' if size > limit else ''}{size} bytes; a config may be at most {limit} bytes "
        f"({limit / (1 << 20):g} MiB): is it the right file? (set {MAX_BYTES_ENV} to raise the limit)"
    )


def decode(data: bytes, source: str | None = None) -> str:
    """UTF-8 text (a UTF-8 BOM is dropped). Raises ConfigError naming the offset of the first bad byte."""
    for bom, name in _BOMS.items():
        if data.startswith(bom):
            if name is None:
                data = data[len(bom) :]
                break
            raise _fail(f"the file is saved as {name} (it starts with that byte-order mark): save it as UTF-8", source)
    nul = data.find(b"\x00")
    if nul >= 0:
        line, col = _line_col(data, nul)
        raise _fail(
            f"a NUL byte at byte offset {nul} (line {line}, column {col}): a config is UTF-8 text, "
            "not binary or UTF-16; save it as UTF-8",
            source,
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _line_col(data, exc.start)
        raise _fail(
            f"not UTF-8: byte 0x{data[exc.start]:02x} at byte offset {exc.start} (line {line}, column {col}); "
            "save the file as UTF-8",
            source,
        ) from None


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    line_start = data.rfind(b"\n", 0, offset) + 1
    return data.count(b"\n", 0, offset) + 1, offset - line_start + 1


def _check_shape(text: str, source: str | None) -> None:
    """One pass over the parser's events: nesting depth and the size of the document with aliases expanded."""
    depth = 0
    stack: list[list[Any]] = []  # [node count so far, anchor]
    anchors: dict[str, int] = {}
    for event in yaml.parse(text, Loader=_Loader):
        size: int | None = None
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else 0
                raise _fail(
                    f"nested more than {MAX_DEPTH} levels deep (at line {line}): a config needs far fewer", source
                )
            stack.append([1, event.anchor])
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
            size, anchor = stack.pop()
        elif isinstance(event, yaml.ScalarEvent):
            size, anchor = 1, event.anchor
        elif isinstance(event, yaml.AliasEvent):
            size, anchor = anchors.get(event.anchor or "", 1), None
        else:
            continue
        if size > MAX_NODES:
            if not anchors:
                raise _fail(
                    f"has more than {MAX_NODES} values: a config needs far fewer (is it the right file?)", source
                )
            raise _fail(
                f"expands to more than {MAX_NODES} values through anchors and aliases (&name / *name): "
                "write the values out, or use fewer aliases",
                source,
            )
        if anchor:
            anchors[anchor] = size
        if stack:
            stack[-1][0] += size


def _scalar_key(node: yaml.Node) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else "?"


def _walk(
    loader: Any,
    node: yaml.Node,
    path: str,
    environ: Mapping[str, str],
    issues: list[ConfigIssue],
    seen: set[int],
) -> None:
    if id(node) in seen:  # an alias: the node was checked where its anchor is
        return
    seen.add(id(node))
    if node.tag not in type(loader).yaml_constructors:
        # !!python/object and friends: the safe constructor refuses them; say where, before it does
        issues.append(
            ConfigIssue(path or "(top level)", f"the YAML tag {node.tag[:60]} is not allowed in a config; remove it")
        )
        return
    if isinstance(node, yaml.ScalarNode):
        _expand(loader, node, path, environ, issues)
        _construct_scalar(loader, node, path, issues)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(loader, item, f"{path}[{i}]", environ, issues, seen)
    elif isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                _expand(loader, key, path, environ, issues)
            name = _scalar_key(key)
            child = f"{path}.{name}" if path else name
            line = key.start_mark.line + 1 if key.start_mark else 0
            if name != "<<" and isinstance(key, yaml.ScalarNode):
                if name in first:
                    issues.append(
                        ConfigIssue(
                            child,
                            f"duplicate key (lines {first[name]} and {line}): YAML keeps only one; remove one of them",
                        )
                    )
                else:
                    first[name] = line
            _walk(loader, value, child, environ, issues, seen)


def _expand(
    loader: Any, node: yaml.ScalarNode, path: str, environ: Mapping[str, str], issues: list[ConfigIssue]
) -> None:
    if not isinstance(node.value, str) or "${" not in node.value:
        return

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        value = environ.get(name, "")
        if value:
            return value
        if default is not None:
            return default
        state = "empty" if name in environ else "not set"
        issues.append(
            ConfigIssue(
                path or "(top level)",
                f"${{{name}}} is {state}: export {name}, or give a default like ${{{name}:-value}}",
            )
        )
        return ""

    value = _VAR_RE.sub(sub, node.value)
    if value == node.value:
        return
    node.value = value
    if not node.style and node.tag == "tag:yaml.org,2002:str":  # plain: None (PyYAML) or "" (libyaml)
        # a plain scalar: type the expanded text the way YAML would have typed it written out
        node.tag = loader.resolve(yaml.ScalarNode, value, (True, False))


def _construct_scalar(loader: Any, node: yaml.ScalarNode, path: str, issues: list[ConfigIssue]) -> None:
    # construct typed scalars here, where the path is known (the constructor caches them for the document):
    # a plain 2026-13-45 is a timestamp YAML cannot build, and the error should name the field
    if node.tag == "tag:yaml.org,2002:str":
        return
    try:
        loader.construct_object(node)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        kind = node.tag.rsplit(":", 1)[-1]
        issues.append(
            ConfigIssue(
                path or "(top level)",
                f"YAML reads this as a {kind} but cannot build it ({str(exc)[:80]}); quote it if it is text",
            )
        )


def load_text(text: str, *, source: str | None = None, environ: Mapping[str, str] | None = None) -> Any:
    """Parse YAML text (see the module docstring). Raises ConfigError."""
    env = os.environ if environ is None else environ
    try:
        _check_shape(text, source)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            issues: list[ConfigIssue] = []
            _walk(loader, node, "", env, issues, set())
            if issues:
                raise ConfigError(issues, source=source)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except ConfigError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        what = exc.problem or exc.context or "cannot be parsed"
        raise _fail(f"not valid YAML at {where}: {what}", source) from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        # the constructor's own errors (a date like 2026-13-45, an unhashable key) are bad input too
        raise _fail(f"not valid YAML: {type(exc).__name__}: {str(exc)[:200]}", source) from None


def load_bytes(data: bytes, *, source: str | None = None, environ: Mapping[str, str] | None = None) -> Any:
    """Decode and parse; see :func:`decode` and :func:`load_text`."""
    return load_text(decode(data, source), source=source, environ=environ)


def load_file(path: str | Path, *, max_bytes: int | None = None, environ: Mapping[str, str] | None = None) -> Any:
    """Read, decode and parse a config file. Raises ConfigError."""
    return load_bytes(read_file(path, max_bytes=max_bytes), source=str(path), environ=environ)
