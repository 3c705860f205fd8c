"""Opening foreign files without running their code.

Every tool saves with ``torch.save`` or ``pickle``; both can execute arbitrary code when
loaded naively. Torch files load with ``weights_only=True`` (plus the two NumPy types VICO's
accuracy lists hold); IDM's pickles go through an unpickler that only rebuilds tensors.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rdd.config.errors import UserError
from rdd.utils.io import code_in, holds_code, pickled_names, refusal, torch_load_safely

# What rdd.evaluate reads, for the messages that refuse a file.
READABLE = (
    "rdd.evaluate reads an rdd synset.pt, VICO/IDM res_*.pt, MTT images_best.pt "
    "(+ labels_best.pt), IDM acc_*.pkl and a torch file of {images, labels}"
)

# VICO's and IDM's res_*.pt keep np.float64 accuracies (np.mean of a list) next to the images;
# rebuilding a NumPy scalar from its bytes runs no code.
NUMPY_SCALARS = [np.dtype, np.dtype(np.float64).__class__, np.dtype(np.float32).__class__]
NUMPY_SCALARS.append(getattr(np, "_core", np.core).multiarray.scalar)

LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError)


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:120] if text else type(err).__name__


def load_torch(path: Path) -> Any:
    """``torch.load`` a file safely on the CPU; a one-line UserError when it cannot be read."""
    try:
        return torch_load_safely(path, NUMPY_SCALARS)
    except LOAD_ERRORS:
        raise UserError(f"'{path}' {refusal(path)}; {READABLE}") from None


def _storage_from_bytes(data: bytes) -> Any:
    # What torch.storage._load_from_bytes does, but with weights_only: the bytes are a nested
    # torch.save of one storage.
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


class TensorUnpickler(pickle.Unpickler):
    """Rebuilds pickled tensors (``pickle.dump((images, labels), f)``); refuses anything else."""

    ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }

    def find_class(self, module: str, name: str) -> Any:
        found = self.ALLOWED.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return found


def load_pickle(path: Path) -> Any:
    """Load a pickle of tensors (IDM's acc_*.pkl); a one-line UserError otherwise."""
    try:
        with path.open("rb") as handle:
            return TensorUnpickler(handle).load()
    except (*LOAD_ERRORS, ValueError, AttributeError, IndexError) as err:
        code = [] if isinstance(err, OSError) else code_in(pickled_names(path))
        why = (
            holds_code(code) if code else f"is not a readable pickle of tensors ({first_line(err)})"
        )
        raise UserError(f"'{path}' {why}; {READABLE}") from None
