"""Every error flmjax defines for something a user can fix is a `FlmjaxError` (launchers catch that one
class), under a name of its own; the others are flmjax's own failures, `RuntimeError`s."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "flmjax"


def error_classes() -> dict[str, list[tuple[str, list[str]]]]:
    """class name -> [(file, base names)] of every class in flmjax/ named *Error or *Exception."""
    found: dict[str, list[tuple[str, list[str]]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Exception")):
                bases = [b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in node.bases]
                found.setdefault(node.name, []).append((str(path.relative_to(PACKAGE.parent)), bases))
    return found


def test_every_error_derives_from_flmjax_error_and_has_its_own_name():
    classes = error_classes()
    assert len(classes) >= 15 and "FlmjaxError" in classes
    twice = {name: [f for f, _ in defs] for name, defs in classes.items() if len(defs) > 1}
    assert not twice, f"error classes defined more than once: {twice}"
    bases = {name: defs[0][1] for name, defs in classes.items()}

    def derives(name: str, root: str) -> bool:
        return name == root or any(b == root or (b in bases and derives(b, root)) for b in bases[name])

    assert bases["FlmjaxError"] == ["ValueError"]
    assert [n for n in bases if not (derives(n, "FlmjaxError") or derives(n, "RuntimeError"))] == []
