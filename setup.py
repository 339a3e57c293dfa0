"""Build hook only (the project is configured in pyproject.toml).

The model card template has one source, the repository's top-level `model_card.md` that users read.
This copies it into the package at build time (`bps_vit/templates/model_card.md`), so a regular,
non-editable install finds it; a source checkout or editable install reads the top-level file.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CARD_TEMPLATE = "model_card.md"


class BuildPyWithCardTemplate(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "bps_vit" / "templates" / CARD_TEMPLATE
        target.parent.mkdir(parents=True, exist_ok=True)
        self.copy_file(CARD_TEMPLATE, str(target))


setup(cmdclass={"build_py": BuildPyWithCardTemplate})
