"""Safe YAML reading that keeps where every value came from.

PyYAML resolves scalars the YAML 1.1 way (``1e-3`` is a string, ``no``/``on`` are
booleans). We compose the node tree only — never construct Python objects from tags —
and resolve plain scalars with the YAML 1.2 core schema ourselves, recording the
``file:line:col`` of every value and every mapping key by its recipe path.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from dlrun.errors import Location, RecipeIssue

Path_ = tuple[Any, ...]  # a recipe path: mapping keys (str) and list indices (int)

# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution)
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^[-+]?[0-9]+$")
_INT_OCT = re.compile(r"^0o[0-7]+$")
_INT_HEX = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")

_STANDARD_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}
# Anchors and aliases are legal YAML, but a document of nested aliases can expand to
# billions of values ("billion laughs"); a recipe never needs this many. Counting values is not
# enough: a few thousand aliases of one long string make a small file megabytes long once read
# (and saved with every run), so the text of every scalar read, aliases expanded, counts too.
MAX_VALUES = 200_000
MAX_EXPANDED_CHARS = 2_000_000
# A recipe file (or --set value) longer than this is refused before it is parsed.
MAX_DOCUMENT_CHARS = 4_000_000
# Python's recursion limit would end deeper documents with a traceback; no recipe nests this deep.
MAX_DEPTH = 100
# Longer integers hit Python's int/str conversion limit (and no recipe needs them).
MAX_INT_DIGITS = 1000


def resolve_scalar(text: str) -> Any:
    """A plain (unquoted) scalar as YAML 1.2 reads it."""
    if _NULL.match(text):
        return None
    if _BOOL.match(text):
        return text.lower() == "true"
    if _INT.match(text):
        return int(text)
    if _INT_OCT.match(text):
        return int(text[2:], 8)
    if _INT_HEX.match(text):
        return int(text[2:], 16)
    if _FLOAT.match(text):
        return float(text)
    if _INF.match(text):
        return float("-inf") if text.startswith("-") else float("inf")
    if _NAN.match(text):
        return float("nan")
    return text


class SourceMap:
    """Recipe path → where its value (and, for mapping entries, its key) was written."""

    def __init__(self) -> None:
        self.values: dict[Path_, Location] = {}
        self.keys: dict[Path_, Location] = {}

    def locate(self, path: Path_, *, key: bool = False) -> Location:
        """The closest known location: the path itself, else its nearest ancestor."""
        table = self.keys if key else self.values
        probe = tuple(path)
        while True:
            if probe in table:
                return table[probe]
            if probe in self.values:
                return self.values[probe]
            if not probe:
                return Location("<recipe>")
            probe = probe[:-1]

    def update(self, other: "SourceMap", prefix: Path_ = ()) -> None:
        for p, loc in other.values.items():
            self.values[prefix + p] = loc
        for p, loc in other.keys.items():
            self.keys[prefix + p] = loc


class YamlProblem(Exception):
    def __init__(self, issue: RecipeIssue):
        super().__init__(str(issue))
        self.issue = issue


class _PlainLoader(yaml.SafeLoader):
    """Composes without YAML 1.1 implicit typing: every untagged scalar stays text."""

    yaml_implicit_resolvers: dict = {}


# libyaml composes the same node tree, with the same positions, ten times faster (it also
# refuses documents nested more than 1,000 levels deep); PyYAML alone is the fallback.
_FastLoader: type | None = None
if getattr(yaml, "__with_libyaml__", False):
    class _FastLoader(yaml.CSafeLoader):  # type: ignore[no-redef]
        yaml_implicit_resolvers: dict = {}


def _compose(text: str) -> yaml.Node | None:
    if _FastLoader is not None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (from --set): PyYAML's reader names the character
            pass
        else:
            return yaml.compose(text, Loader=_FastLoader)
    return yaml.compose(text, Loader=_PlainLoader)


def _loc(file: str, node: yaml.Node) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


def format_path(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Converter:
    def __init__(self, file: str):
        self.file = file
        self.count = 0
        self.chars = 0  # the text of the scalars read so far, aliases expanded
        self.open: set[int] = set()  # the collection nodes being converted (recursive aliases)
        self.source = SourceMap()

    def fail(self, node: yaml.Node, path: Path_, message: str) -> None:
        raise YamlProblem(RecipeIssue(_loc(self.file, node), format_path(path), message))

    def convert(self, node: yaml.Node, path: Path_) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            self.fail(node, path, f"the document expands to more than {MAX_VALUES} values (alias bomb?)")
        if len(path) > MAX_DEPTH:
            self.fail(node, path[:MAX_DEPTH], f"the document is nested more than {MAX_DEPTH} levels deep")
        if id(node) in self.open:  # an alias to one of its own ancestors: `a: &x [*x]`
            self.fail(node, path, "an alias refers to a value that contains it (a recursive alias)")
        if isinstance(node, yaml.CollectionNode):
            self.open.add(id(node))
            try:
                return self._convert(node, path)
            finally:
                self.open.discard(id(node))
        return self._convert(node, path)

    def _convert(self, node: yaml.Node, path: Path_) -> Any:
        self.source.values[path] = _loc(self.file, node)
        if node.tag not in _STANDARD_TAGS and node.tag.startswith(("!", "tag:")):
            self.fail(node, path, f"YAML tag '{node.tag.replace('tag:yaml.org,2002:', '!!')}' is not allowed in a recipe (tags never build objects)")
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, path + (i,)) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        self.fail(node, path, "unsupported YAML node")  # pragma: no cover

    def _alias_site(self, node: yaml.Node, path: Path_) -> Location:
        """Where the value at ``path`` was written: an alias shares its anchor's node (and
        position), so the nearest mapping key on the path says where the alias stands."""
        for depth in range(len(path), 0, -1):
            if path[:depth] in self.source.keys:
                return self.source.keys[path[:depth]]
        return _loc(self.file, node)

    def _scalar(self, node: yaml.ScalarNode, path: Path_) -> Any:
        self.chars += len(node.value) + 1
        if self.chars > MAX_EXPANDED_CHARS:
            raise YamlProblem(RecipeIssue(
                self._alias_site(node, path), format_path(path),
                f"the document expands to more than {MAX_EXPANDED_CHARS:,} characters (aliases repeat the text "
                f"of their anchor); a recipe never needs this much"))
        # Quoted and block scalars are strings; plain ones resolve the YAML 1.2 way.
        if node.style:
            return self._text(node, path)
        if len(node.value) > MAX_INT_DIGITS and (_INT.match(node.value) or _INT_OCT.match(node.value)
                                                 or _INT_HEX.match(node.value)):
            self.fail(node, path, f"an integer with more than {MAX_INT_DIGITS} digits")
        return resolve_scalar(node.value)

    def _text(self, node: yaml.ScalarNode, path: Path_) -> str:
        text = node.value
        if any("\ud800" <= c <= "\udfff" for c in text):  # "\ud83d\ude00" escapes: join the pairs
            try:
                text = text.encode("utf-16", "surrogatepass").decode("utf-16")
            except UnicodeDecodeError:
                self.fail(node, path, "a lone UTF-16 surrogate escape (\\ud800–\\udfff) is not a character")
        return text

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.value == "<<" and not key_node.style:
                self.fail(key_node, path, "YAML merge keys ('<<') are not supported; use 'extends:'")
            if not isinstance(key_node, yaml.ScalarNode):
                self.fail(key_node, path, "mapping keys must be plain names")
            key = self._scalar(key_node, path)
            key = key if isinstance(key, str) else str(key).lower() if isinstance(key, bool) else str(key)
            if key in out:
                self.fail(key_node, path + (key,), f"duplicate key '{key}'")
            self.source.keys[path + (key,)] = _loc(self.file, key_node)
            out[key] = self.convert(value_node, path + (key,))
        return out


def load_yaml_text(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document; raise YamlProblem with a located message on any error."""
    if len(text) > MAX_DOCUMENT_CHARS:
        raise YamlProblem(RecipeIssue(Location(file), "", f"the document is {len(text):,} characters long; a "
                                                          f"recipe is at most {MAX_DOCUMENT_CHARS:,}"))
    try:
        node = _compose(text)
    except RecursionError:  # PyYAML composes nested collections recursively
        raise YamlProblem(RecipeIssue(Location(file), "", "the document is nested too deeply")) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        what = exc.problem or exc.context or "invalid YAML"
        raise YamlProblem(RecipeIssue(loc, "", f"YAML syntax error: {what}")) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(RecipeIssue(Location(file), "", f"YAML error: {exc}")) from None
    if node is None:  # empty or comments only
        source = SourceMap()
        source.values[()] = Location(file, 1, 1)
        return None, source
    converter = _Converter(file)
    value = converter.convert(node, ())
    return value, converter.source


def parse_scalar_text(text: str, where: str) -> Any:
    """A ``--set`` value: any YAML flow value (scalar, ``[a, b]`` or ``{k: v}``)."""
    value, _ = load_yaml_text(text, where)
    return value
