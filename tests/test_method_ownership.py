"""One method, one file: a method's name appears in no code outside its own method file.

What a method is (its optimisers and extra losses, recipe section, epoch records, inference
form, analyses) is declared by its model class in zoo/methods/; the trainer, the publisher,
the analyses and the app reach it through `FaceModel` hooks and registries keyed by
analysis name. So in train/, analysis/, app/, app.py and zoo/ outside zoo/methods/, the code
(identifiers, imported module names and every string literal but docstrings) never names a
registered method. Docstrings and comments are documentation and may name one as an example;
recipes (train/configs), tests, benchmarks (bench/: they name the methods they measure) and
the README are outside the rule.
"""
import ast
import re
from pathlib import Path

import pytest

import analysis
from app.panels import RENDERERS
import zoo

pytestmark = pytest.mark.fast  # needs no face data: the fast tier (pytest -m fast)

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ["train", "analysis", "app", "app.py", "zoo"]
OWN_FILES = ROOT / "zoo" / "methods"
# (file, part of a string literal) allowed to name a method, and why.
EXCEPTIONS = {
    # An example hub repo id for a person typing one (the pull error and the repo box's
    # placeholder): it names a zoo checkpoint, not method logic.
    ("app/models.py", "facescope/scan-mobilefacenet.fss-ft"),
    ("app/pages/zoo.py", "facescope/scan-mobilefacenet.fss-ft"),
}


def method_names():
    return sorted((name for name in zoo.METHODS if name != "plain"), key=len, reverse=True)


def checked_files():
    for entry in CHECKED:
        path = ROOT / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            if OWN_FILES not in file.parents:
                yield file


def code_words(tree: ast.AST):
    """(line, text) of every identifier, imported module name and non-docstring string literal."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant) and isinstance(node.body[0].value.value, str)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value
        elif isinstance(node, ast.Name):
            yield node.lineno, node.id
        elif isinstance(node, ast.Attribute):
            yield node.lineno, node.attr
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.lineno, node.name
        elif isinstance(node, (ast.arg, ast.keyword)) and node.arg:
            yield node.lineno, node.arg
        elif isinstance(node, ast.alias):
            yield node.lineno, f"{node.name} {node.asname or ''}"
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.lineno, node.module


def test_no_code_outside_a_method_file_names_a_method():
    # A name counts, in any case, as a word of its own or of a snake- or CamelCase identifier:
    # `scan_t`, `scan-ir18`, `FoldedScanModel`, `SRANetAttention`, `HPDAMasks` count;
    # `curricularface` does not hold ARFace, nor `scanner` SCAN.
    names = "|".join(map(re.escape, method_names()))
    pattern = re.compile(rf"(?:(?<![A-Za-z0-9])|(?<=[a-z0-9])(?=[A-Z]))(?i:{names})(?![a-z0-9])")
    found = []
    for file in checked_files():
        relative = file.relative_to(ROOT).as_posix()
        for line, text in code_words(ast.parse(file.read_text(), str(file))):
            if pattern.search(text) and not any(relative == file_ and part in text for file_, part in EXCEPTIONS):
                found.append(f"{relative}:{line}: {text!r}")
    assert not found, "method names outside the method files:\n" + "\n".join(found)


def test_the_exceptions_are_still_there():
    """An exception that no longer occurs is dropped from the list, so the list stays honest."""
    texts = [(file.relative_to(ROOT).as_posix(), text) for file in checked_files()
             for _, text in code_words(ast.parse(file.read_text()))]
    for exception in EXCEPTIONS:
        assert any(file == exception[0] and exception[1] in text for file, text in texts), exception


def test_every_declared_analysis_is_implemented_and_drawn_by_the_app():
    for name, method in zoo.METHODS.items():
        for declared in method.analyses:
            assert declared in analysis.common.ASKED_AS, f"{name} declares {declared!r}, which analysis/ lacks"
        drawn = [a for a in method.analyses if a in RENDERERS]
        assert drawn or not method.analyses, f"{name}: the app has no panels for any of {method.analyses}"


def test_method_sections_come_from_the_methods():
    from train.config import method_sections

    assert method_sections() == {name for name, method in zoo.METHODS.items() if method.training_settings}
