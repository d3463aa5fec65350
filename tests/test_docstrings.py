"""Every public function, class and method of the package has a docstring (the API reference is built from them).

Walks every module of ``manifoldcert`` (``pkgutil.walk_packages``) and counts what is public (its name does not
start with ``_``) and defined there (not imported): module-level functions and classes, and the functions,
static / class methods and properties a class defines itself. A class needs its own docstring (not one written by
``dataclass`` or ``NamedTuple``, not its base's); a method that overrides a documented method of a base class
inherits that docstring, as ``help()`` and ``inspect.getdoc`` show it.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import FunctionType, ModuleType

import manifoldcert


def _modules() -> list[ModuleType]:
    modules = [manifoldcert]
    for info in pkgutil.walk_packages(manifoldcert.__path__, "manifoldcert."):
        modules.append(importlib.import_module(info.name))
    return modules


def _function(member: object) -> FunctionType | None:
    """The function behind a class attribute (plain, static, class method or property getter)."""
    if isinstance(member, (staticmethod, classmethod)):
        member = member.__func__
    elif isinstance(member, property):
        member = member.fget
    return member if isinstance(member, FunctionType) else None


def _own_doc(cls: type) -> str | None:
    doc = cls.__dict__.get("__doc__")
    if not doc or not doc.strip() or doc.startswith(f"{cls.__name__}("):  # dataclass / NamedTuple signature
        return None
    return doc


def _inherited_doc(cls: type, name: str) -> str | None:
    for base in cls.__mro__[1:]:
        function = _function(base.__dict__.get(name))
        if function is not None and (function.__doc__ or "").strip():
            return function.__doc__
    return None


def undocumented() -> list[str]:
    """Dotted names of the public functions, classes and methods of the package without a docstring."""
    missing = []
    for module in _modules():
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            qualified = f"{module.__name__}.{name}"
            if isinstance(obj, FunctionType):
                if not (obj.__doc__ or "").strip():
                    missing.append(qualified)
            elif inspect.isclass(obj):
                if _own_doc(obj) is None:
                    missing.append(f"{qualified} (class)")
                for attribute, member in vars(obj).items():
                    function = _function(member)
                    if attribute.startswith("_") or function is None:
                        continue
                    if function.__module__ != module.__name__ or not function.__qualname__.startswith(
                        f"{obj.__qualname__}."
                    ):
                        continue  # assigned from elsewhere
                    if not (function.__doc__ or _inherited_doc(obj, attribute) or "").strip():
                        missing.append(f"{qualified}.{attribute}")
    return missing


def test_every_public_object_has_a_docstring() -> None:
    missing = undocumented()
    if missing:
        print(f"{len(missing)} public functions, classes and methods without a docstring:")
        print("\n".join(f"  {name}" for name in missing))
    assert not missing, f"{len(missing)} without a docstring:\n" + "\n".join(missing)
