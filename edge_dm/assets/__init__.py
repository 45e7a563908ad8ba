"""Data edge-dm ships: a package only so that installs carry it (no code here).

In the repository the data stays in the top-level folders `models/` and `datasets/`; pyproject.toml
maps them onto the packages `edge_dm.assets.models` and `edge_dm.assets.datasets` (setuptools'
package-dir), so a wheel holds them under `edge_dm/assets/`. Find them with `edge_dm.resources`.
"""
