"""Sharing and deploying a trained model (issue 26): ``masam export`` writes one archive (every
fold's weights, input rules, labels, post-processing, training settings, cross-validation summary,
a model card and a manifest with the sha256 of every member), ``masam install`` checks and unpacks
it into the models folder, and ``masam predict -m NAME`` or ``-m model.zip`` predicts with it,
offline. Layout: :mod:`.archive` (the format and its checks), :mod:`.export`, :mod:`.card`,
:mod:`.install`, :mod:`.monai_bundle`, :mod:`.config` (the commands' settings)."""

from .archive import ArchiveError, extract_archive, verify_archive
from .install import install_archive, models_folder, resolved_models

__all__ = ["ArchiveError", "extract_archive", "install_archive", "models_folder", "resolved_models", "verify_archive"]
