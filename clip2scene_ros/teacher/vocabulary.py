"""Vocabularies (class names + synonyms) and prompt-template ensembles, loaded from config/vocab/.

A vocabulary file: ``name``, ``ignore_index`` (0), ``templates`` (a set or alias of
``config/vocab/templates.yaml``) and ``classes: [{name, names: [...], details: [...]}]``; classes
get ids ``ignore_index + 1 ...`` in file order. Runtime vocabularies are any list of strings.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from clip2scene_ros.resources import config_path


class VocabularyError(ValueError):
    """A vocabulary or template file is malformed (message names the file and the fix)."""


@dataclass(frozen=True)
class VocabClass:
    name: str
    names: tuple[str, ...]  # prompted synonyms; the first is canonical
    details: tuple[str, ...] = ()  # OpenScene-style detailed names (optional)

    def prompt_names(self, use_details: bool = False) -> tuple[str, ...]:
        return self.details if use_details and self.details else self.names


@dataclass(frozen=True)
class Vocabulary:
    name: str
    classes: tuple[VocabClass, ...]
    ignore_index: int = 0
    templates: str = "default"
    use_details: bool = False
    source: str = "<runtime>"
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.classes:
            raise VocabularyError(f"vocabulary '{self.name}' ({self.source}) has no classes")
        seen = set()
        for c in self.classes:
            if c.name in seen:
                raise VocabularyError(f"vocabulary '{self.name}' ({self.source}): duplicate class '{c.name}'")
            seen.add(c.name)

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def ids(self) -> list[int]:
        """Label id of each class (ignore_index + 1, ...), as in the dataset's label files."""
        return [self.ignore_index + 1 + i for i in range(len(self.classes))]

    def prompt_names(self) -> list[tuple[str, ...]]:
        return [c.prompt_names(self.use_details) for c in self.classes]

    def with_details(self, use_details: bool = True) -> Vocabulary:
        return Vocabulary(
            self.name, self.classes, self.ignore_index, self.templates, use_details, self.source
        )

    @classmethod
    def from_names(
        cls, names: Sequence[str | Sequence[str]], name: str = "runtime", templates: str = "default"
    ):
        """A runtime vocabulary: each entry is a phrase or a list of synonyms."""
        classes = []
        for entry in names:
            syn = (entry,) if isinstance(entry, str) else tuple(entry)
            if not syn or not all(isinstance(s, str) and s.strip() for s in syn):
                raise VocabularyError(f"runtime vocabulary entry {entry!r} must be a non-empty string")
            classes.append(VocabClass(syn[0], tuple(s.strip() for s in syn)))
        return cls(name, tuple(classes), 0, templates)


def _vocab_path(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return path
    return config_path("vocab", f"{name_or_path}.yaml")


def load_vocabulary(name_or_path: str | os.PathLike, details: bool = False) -> Vocabulary:
    """Load ``config/vocab/<name>.yaml`` (nuscenes, semantickitti, scannet, synthetic) or a path."""
    path = _vocab_path(name_or_path)
    if not path.is_file():
        available = sorted(p.stem for p in config_path("vocab").glob("*.yaml") if p.stem != "templates")
        raise VocabularyError(f"vocabulary '{name_or_path}' not found ({path}); available: {available}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise VocabularyError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("classes"), list):
        raise VocabularyError(f"{path}: expected a mapping with 'classes: [{{name, names: [...]}}]'")
    classes = []
    for i, item in enumerate(raw["classes"]):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise VocabularyError(f"{path}: class #{i} needs a 'name' string")
        names = item.get("names") or [item["name"].replace("_", " ")]
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise VocabularyError(f"{path}: class '{item['name']}': 'names' must be a list of strings")
        details = item.get("details") or []
        classes.append(VocabClass(item["name"], tuple(names), tuple(details)))
    templates = str(raw.get("templates", "default"))
    load_templates(templates)  # validate early, with the vocabulary's file named in the error
    return Vocabulary(
        name=str(raw.get("name", path.stem)),
        classes=tuple(classes),
        ignore_index=int(raw.get("ignore_index", 0)),
        templates=templates,
        use_details=details,
        source=str(path),
    )


@functools.lru_cache(maxsize=8)
def _template_file(path: str) -> dict:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise VocabularyError(f"cannot read prompt templates {path}: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("sets"), dict):
        raise VocabularyError(f"{path}: expected 'sets: {{name: [templates]}}' and optional 'aliases'")
    return raw


def load_templates(spec: str | Sequence[str] = "default") -> tuple[str, ...]:
    """Templates of a set or alias in config/vocab/templates.yaml, or an explicit list.

    Sets can be combined with '+', e.g. ``"scene5+street"``. Each template contains one '{}'.
    """
    if not isinstance(spec, str):
        templates = tuple(spec)
    else:
        raw = _template_file(str(config_path("vocab", "templates.yaml")))
        templates = []
        for part in spec.split("+"):
            part = part.strip()
            members = raw.get("aliases", {}).get(part, [part])
            for member in members:
                if member not in raw["sets"]:
                    known = sorted(raw["sets"]) + sorted(raw.get("aliases", {}))
                    raise VocabularyError(f"unknown prompt template set '{member}'; known: {known}")
                templates.extend(raw["sets"][member])
        templates = tuple(templates)
    bad = [t for t in templates if t.count("{}") != 1]
    if bad or not templates:
        raise VocabularyError(f"prompt templates must each contain exactly one '{{}}': {bad or 'empty set'}")
    return templates
