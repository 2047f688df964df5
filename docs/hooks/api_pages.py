"""MkDocs hook: the API reference, one page per public module, generated at build time.

For each of the six packages the hook reads the source statically with griffe (the library
mkdocstrings itself uses; nothing is imported) and writes, as in-memory pages:

- ``api/<package>/index.md``: the package's docstring, a table of its public modules with their
  one-line summaries, and a table of the names it exports, each linking to the page of the module
  that defines it;
- ``api/<package>/<dotted.module>.md`` for every public module and subpackage, rendered by
  mkdocstrings with that module's own members only (no submodules, no re-exports), so no object
  is documented twice and no page holds a whole package.

It also fills the "API reference" section of the navigation, so a new module appears in the site
with no hand-kept list. Re-exported names keep working as cross-reference targets
(``[fms_llm.tokenizer.BPETokenizer][]``): each row of a package's export table carries an anchor
at the name's public path. A member is linked by its canonical path
(``[flops_per_token][fms_llm.models.gpt.GPT.flops_per_token]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import griffe
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["fms-ml", "fms-dl", "fms-transformer", "fms-llm", "fms-mm", "fms-agent"]
_SECTION = "API reference"


def _load(package: str) -> griffe.Module:
    name = package.replace("-", "_")
    loaded = griffe.load(name, search_paths=[str(ROOT / "packages" / package / "src")])
    assert isinstance(loaded, griffe.Module)
    return loaded


def _public_modules(module: griffe.Module) -> list[griffe.Module]:
    """The module's public submodules defined in its own tree (not imported aliases), in order."""
    found: list[griffe.Module] = []
    for name, sub in module.modules.items():
        if sub.is_alias or name.startswith("_") or not sub.path.startswith(module.path + "."):
            continue
        found.append(sub)
    return sorted(found, key=lambda m: m.path)


def _walk(module: griffe.Module) -> list[griffe.Module]:
    out: list[griffe.Module] = []
    for sub in _public_modules(module):
        out.append(sub)
        if sub.is_init_module:
            out.extend(_walk(sub))
    return out


def _summary(obj: griffe.Object | griffe.Alias) -> str:
    docstring = obj.docstring
    if docstring is None or not docstring.value.strip():
        return ""
    first = docstring.value.strip().split("\n\n")[0]
    return " ".join(first.split()).replace("|", "\\|")


def _exports(module: griffe.Module) -> list[str]:
    names = module.exports
    if names is None:
        return []
    return [str(n) for n in names if not str(n).startswith("_")]


def _page_name(module: griffe.Module) -> str:
    return f"{module.path}.md"


def _is_private(module: griffe.Module) -> bool:
    return any(part.startswith("_") for part in module.path.split("."))


def _target(member: griffe.Object | griffe.Alias) -> griffe.Object | None:
    """What a member is (an alias followed to its definition); ``None`` if defined outside."""
    if not member.is_alias:
        assert isinstance(member, griffe.Object)
        return member
    try:
        target = member.final_target
    except (griffe.AliasResolutionError, griffe.CyclicAliasError, KeyError):
        return None  # a name imported from outside the package (importlib, typing...)
    return target if isinstance(target, griffe.Object) else None


def _own_members(module: griffe.Module) -> list[str]:
    """Names this page documents: defined here, or re-exported from a private module."""
    own: list[str] = []
    for name in _exports(module) or list(module.members):
        member = module.members.get(name)
        target = None if member is None else _target(member)
        if member is None or target is None or name.startswith("_") or target.is_module:
            continue
        home = target.parent
        if member.is_alias and not (isinstance(home, griffe.Module) and _is_private(home)):
            continue
        own.append(name)
    return own


def _module_page(module: griffe.Module) -> str:
    """A module's page: its own members (mkdocstrings), no submodules and no re-exported names."""
    own = _own_members(module)
    members = "\n".join(f"        - {name}" for name in own) if own else "false"
    if own:
        members = "\n" + members
    text = (
        f"::: {module.path}\n"
        "    options:\n"
        "      show_root_heading: true\n"
        "      heading_level: 1\n"
        "      show_submodules: false\n"
        f"      members: {members}\n"
    )
    if module.is_init_module:
        text += _contents(module)
    return text


def _contents(module: griffe.Module) -> str:
    """A package's tables: its public modules, and the names it exports with where they live."""
    lines: list[str] = []
    subs = _public_modules(module)
    if subs:
        lines += ["", "## Modules", "", "| module | what it holds |", "|---|---|"]
        lines += [f"| [`{s.path}`]({_page_name(s)}) | {_summary(s)} |" for s in subs]
    rows: list[str] = []
    for name in _exports(module):
        member = module.members.get(name)
        target = None if member is None else _target(member)
        if member is None or target is None or target.is_module:
            continue
        if member.is_alias:
            home = target.parent
            if not isinstance(home, griffe.Module) or home.path == module.path:
                continue
            if _is_private(home):
                continue  # documented on this page itself (see _own_members)
            # An anchor at the name's public path, so [fms_llm.models.GPT][] resolves as well as
            # the canonical fms_llm.models.gpt.GPT (members are linked by their canonical path).
            marks = f"[](){{#{module.path}.{name}}}"
            rows.append(
                f"| {marks}[`{name}`][{target.path}] | "
                f"[`{home.path}`]({home.path}.md) | {_summary(target)} |"
            )
    if rows:
        lines += [
            "",
            "## Exported names",
            "",
            f"`from {module.path} import ...` gives these; each is documented on the page of the "
            "module that defines it.",
            "",
            "| name | defined in | summary |",
            "|---|---|---|",
            *rows,
        ]
    return "\n".join(lines) + "\n"


def _pages() -> dict[str, tuple[str, str]]:
    """``{src_uri: (nav title, markdown)}`` for every generated API page."""
    pages: dict[str, tuple[str, str]] = {}
    for package in PACKAGES:
        top = _load(package)
        pages[f"api/{package}/index.md"] = (package, _module_page(top))
        for module in _walk(top):
            title = module.path.removeprefix(top.path + ".")
            pages[f"api/{package}/{_page_name(module)}"] = (title, _module_page(module))
    return pages


_GENERATED: dict[str, tuple[str, str]] = {}


def on_config(config: Any, **_: Any) -> Any:
    _GENERATED.clear()
    _GENERATED.update(_pages())
    section: list[Any] = ["api/index.md"]
    for package in PACKAGES:
        prefix = f"api/{package}/"
        entries: list[Any] = [f"{prefix}index.md"]
        entries += [
            {title: uri}
            for uri, (title, _) in _GENERATED.items()
            if uri.startswith(prefix) and uri != f"{prefix}index.md"
        ]
        section.append({package: entries})
    nav = config["nav"] or []
    for i, item in enumerate(nav):
        if isinstance(item, dict) and _SECTION in item:
            nav[i] = {_SECTION: section}
            break
    else:
        nav.append({_SECTION: section})
    config["nav"] = nav
    return config


def on_files(files: Files, config: Any, **_: Any) -> Files:
    for uri, (_, content) in _GENERATED.items():
        files.append(File.generated(config, uri, content=content))
    return files
