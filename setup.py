"""Package discovery: ``studio/`` plus the folders installed under its namespace (DESIGN.md:
``methods/`` -> ``studio.methods``, ``viewer/`` -> ``studio.viewer``, ...). Everything else is in
pyproject.toml. A new method folder with an ``__init__.py`` is found without editing this file."""

from setuptools import find_packages, setup

PACKAGE_DIRS = {
    "studio": "studio",
    "studio.methods": "methods",
    "studio.viewer": "viewer",
    "studio.cuda": "cuda",
    "studio.configs": "configs",
    "studio.scenes": "scenes",
}


def discover() -> list[str]:
    packages = []
    for name, folder in PACKAGE_DIRS.items():
        packages.append(name)
        packages += [f"{name}.{sub}" for sub in find_packages(folder)]
    return sorted(set(packages))


if __name__ == "__main__":  # setuptools runs this file as __main__
    setup(packages=discover(), package_dir=PACKAGE_DIRS)
