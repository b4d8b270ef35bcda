"""Run the QGIS plugin repository's own validation (QGIS-Django's ``plugins/validator.py``) on the plugin zip.

The validator is a Django module; it is loaded from a checkout of https://github.com/qgis/QGIS-Django with
small stand-ins for the three Django names it imports (settings, ValidationError, an uploaded-file class)
and for ``requests``: its last check asks whether the homepage, tracker and repository URLs answer, which
cannot be done offline and cannot pass until the project is published (the URLs are placeholders). That
check is reported as skipped; every other check runs as on plugins.qgis.org.

Usage: python scripts/validate_plugin_zip.py PATH/TO/QGIS-Django/qgis-app/plugins/validator.py dist/fastunet_geo.zip
"""

from __future__ import annotations

import sys
import types
from pathlib import Path


class ValidationError(Exception):
    """Django's ValidationError, as the validator raises it."""

    def __init__(self, message: object, *args: object, **kwargs: object) -> None:
        super().__init__(str(message))
        self.messages = [str(message)]


class _Response:
    status_code = 200


def _install_stand_ins(unreached: list[str]) -> None:
    django = types.ModuleType("django")
    conf = types.ModuleType("django.conf")
    conf.settings = types.SimpleNamespace()  # type: ignore[attr-defined]
    forms = types.ModuleType("django.forms")
    forms.ValidationError = ValidationError  # type: ignore[attr-defined]
    files = types.ModuleType("django.core.files.uploadedfile")
    files.SimpleUploadedFile = lambda name, content, content_type=None: (name, len(content))  # type: ignore[attr-defined]
    translation = types.ModuleType("django.utils.translation")
    translation.gettext_lazy = lambda text: text  # type: ignore[attr-defined]
    requests = types.ModuleType("requests")

    def head(url: str, **_kwargs: object) -> _Response:
        unreached.append(url)  # offline: not asked
        return _Response()

    requests.head = head  # type: ignore[attr-defined]
    requests.exceptions = types.SimpleNamespace(SSLError=OSError)  # type: ignore[attr-defined]
    for name, module in {"django": django, "django.conf": conf, "django.forms": forms, "django.core": types.ModuleType(
            "django.core"), "django.core.files": types.ModuleType("django.core.files"),
            "django.core.files.uploadedfile": files, "django.utils": types.ModuleType("django.utils"),
            "django.utils.translation": translation, "requests": requests}.items():
        sys.modules[name] = module


def validate(validator_py: Path, plugin_zip: Path) -> tuple[dict[str, object], list[str]]:
    """Return the metadata the validator accepted and the URLs it would have asked; raise ValidationError."""
    import importlib.util

    unreached: list[str] = []
    _install_stand_ins(unreached)
    spec = importlib.util.spec_from_file_location("qgis_django_plugin_validator", validator_py)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {validator_py}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with open(plugin_zip, "rb") as f:
        f.size = plugin_zip.stat().st_size  # type: ignore[attr-defined]
        metadata = module.validator(f, is_new=True)
    return dict(metadata), unreached


def main(argv: list[str] | None = None) -> int:
    """Validate and print the outcome."""
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    try:
        metadata, unreached = validate(Path(args[0]), Path(args[1]))
    except ValidationError as exc:
        print(f"REFUSED: {exc}")
        return 1
    print(f"accepted: {metadata['name']} {metadata['version']} (package {metadata['package_name']}, "
          f"QGIS {metadata['qgisMinimumVersion']}..{metadata.get('qgisMaximumVersion', '')})")
    print(f"not checked offline (placeholders until published): {', '.join(unreached)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
