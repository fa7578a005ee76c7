"""Every error of the package, under one base: the CLI, the trainer and the pages catch
:class:`CelebmodelError` and show its message, which reads ``"<file or setting>: <problem>"``.

Each type also keeps the builtin base it had (``ValueError`` for bad input, ``RuntimeError``
for a state that cannot be used), so older callers catching those still work.
"""

from __future__ import annotations


class CelebmodelError(Exception):
    """A problem the user can fix; the message names the file or setting and the problem."""


class ImageError(CelebmodelError, ValueError):
    """An image that cannot be used, with a message that names the file and the problem.

    The message is shown to users as is, so it always reads ``"<file>: <problem>"``.

    Parameters
    ----------
    path
        The file name or path (or caller-supplied name); None for anonymous input.
    problem
        What is wrong, in plain words.
    placeholder
        Shown instead of the path when there is none (``"<bytes>"``, ``"<array>"`` ...).
    """

    def __init__(self, path: str | None, problem: str, placeholder: str = "<bytes>") -> None:
        super().__init__(path, problem, placeholder)
        self.path = path
        self.problem = problem
        self.placeholder = placeholder

    def __str__(self) -> str:
        return f"{self.path if self.path is not None else self.placeholder}: {self.problem}"


class DatasetError(CelebmodelError, ValueError):
    """A dataset that cannot be used; the message names the folder or celebrity and the problem."""


class UploadError(CelebmodelError, ValueError):
    """An upload that cannot be used; the message names the file and the problem."""


class ConfigError(CelebmodelError, ValueError):
    """A setting that cannot be used; the message names the setting and the problem."""


class WeightsError(CelebmodelError, RuntimeError):
    """Pretrained weights that cannot be had; the message says how to get them."""


class FaceError(CelebmodelError, ValueError):
    """No usable face, or the face models are missing; the message says why."""


class DlibFormatError(CelebmodelError, ValueError):
    """A file that is not the dlib network expected; the message names the file and the spot."""


class RunError(CelebmodelError, RuntimeError):
    """A run that cannot be used; the message names the run and what is wrong."""


class JobError(CelebmodelError, RuntimeError):
    """A training that cannot be started or stopped; the message says why."""


class ExportError(CelebmodelError, ValueError):
    """A model export that cannot be made; the message names the folder or format and why."""


class GroupError(CelebmodelError, ValueError):
    """A change to an album's groups that cannot be made; the message names the file and why."""


class ServeError(CelebmodelError, RuntimeError):
    """An API server that cannot start; the message names the address or setting and why."""


class Cancelled(CelebmodelError):
    """The training process was asked to stop (SIGTERM, or Ctrl-C)."""


class EngineError(CelebmodelError, RuntimeError):
    """An engine that cannot run the job (Ray missing, a cluster out of reach); the message
    names the engine or address and what to do."""


class VideoError(CelebmodelError, ValueError):
    """A video that cannot be read (not a video, no picture, an undecodable codec, no frame);
    the message names the file and the problem."""
