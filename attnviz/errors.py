"""One family of errors for everything a user can get wrong.

Every error attnviz raises for bad *input* (a model it cannot operate on, a
file that is not what it claims, an unknown name, a bad setting) is an
:class:`AttnvizError`. The command line catches that one class and prints its
message as one line (exit status 2); anything else is a bug and keeps its
traceback. ``AttnvizError`` subclasses ``ValueError``, as the errors it
replaces did, so ``except ValueError`` in user code keeps working.

This module imports nothing: every layer of the package may use it.
"""

from __future__ import annotations

__all__ = [
    "AttnvizError",
    "CamError",
    "DataError",
    "DataNotFoundError",
    "FileFormatError",
    "GridError",
    "InputContractError",
    "LaunchError",
    "OutputError",
    "RecipeError",
    "StatisticsError",
    "SurgeryError",
    "TraceError",
    "TrainError",
    "UnknownNameError",
    "UntrustedCodeError",
]


class AttnvizError(ValueError):
    """Bad input to attnviz; the message says what was wrong and what would work."""


class UnknownNameError(AttnvizError, KeyError):
    """A name (block, layer, model, method, setting) that is not one of the valid choices.

    Also a ``KeyError`` (it is a failed lookup); unlike ``KeyError`` it prints
    its message as written, not quoted.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class SurgeryError(AttnvizError):
    """Surgery could not be done as asked; the message says why and what would work."""


class TraceError(AttnvizError):
    """A forward could not be traced or compiled; names the module and the op."""


class CamError(AttnvizError):
    """A CAM that cannot be computed as asked (layer, target, model output, method option).

    The message names what the model gave and the option to pass instead.
    """


class RecipeError(AttnvizError):
    """A recipe that cannot be used; the message names the file and the key."""


class GridError(AttnvizError):
    """An ablation grid that cannot run; raised before any cell starts."""


class LaunchError(AttnvizError):
    """Cells that cannot be launched: a missing extra, an unreachable cluster, an unshared out folder."""


class TrainError(AttnvizError):
    """Bad training input (settings, data, recipe, run folder); raised before anything is written."""


class DataError(AttnvizError):
    """A dataset, image or mask that cannot be used as asked (names the file or spec)."""


class DataNotFoundError(DataError, FileNotFoundError):
    """Data that is not where a spec or path says: names where it looked and what would fetch it.

    Also a ``FileNotFoundError``, the error these cases raised before.
    """


class InputContractError(AttnvizError):
    """Models or data that disagree on what the input is (size, normalisation, classes)."""


class StatisticsError(AttnvizError):
    """A statistic asked of data or settings that cannot give it (level, replicates, pairing)."""


class FileFormatError(AttnvizError):
    """A file that is not a valid attnviz file of its kind: names the file and the field."""


class OutputError(AttnvizError):
    """An output path that cannot be created or written: names the path and why.

    Raised by the check every command runs on its output folders before any work starts.
    """


class UntrustedCodeError(AttnvizError):
    """A file asks attnviz to import or call code outside the allowlist.

    Files are data: a saved model, run folder, spec or result may only name
    ``torchvision:``, ``timm:`` and ``attnviz:`` models, registered blocks and
    allowlisted classes. Pass ``base=`` or opt in with ``trust_code=True``
    (``--trust-code``) for anything else.
    """
