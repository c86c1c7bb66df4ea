"""Serializers chosen by file extension, and placing an artifact value at its path.

`.pkl`/`.joblib` are unpickled on load: loading runs code chosen by whoever wrote the
file, so on a shared store only trusted runs may be loaded (see docs/team.md).
"""

from __future__ import annotations

import importlib
import io
import json
import os
import pathlib
import pickle
import sys
from collections.abc import Callable
from typing import Any

from luigiflow._core import artifact_files
from luigiflow._errors import ArtifactError

SaveFn = Callable[[Any, str], Any]
LoadFn = Callable[[str], Any]


def _save_pickle(obj: Any, path: str) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def _load_pickle(path: str) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)


def _save_joblib(obj: Any, path: str) -> None:
    import joblib

    joblib.dump(obj, path)


def _load_joblib(path: str) -> Any:
    import joblib

    return joblib.load(path)


def _save_json(obj: Any, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1, default=_json_default)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # NumPy scalars and arrays
        return obj.tolist()
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _load_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _save_text(obj: Any, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(obj if isinstance(obj, str) else str(obj))


def _load_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _as_frame(obj: Any) -> Any:
    import pandas as pd

    if isinstance(obj, pd.Series):
        return obj.to_frame()
    if not isinstance(obj, pd.DataFrame):
        return pd.DataFrame(obj)
    return obj


def _save_csv(obj: Any, path: str) -> None:
    import pandas as pd

    frame = _as_frame(obj)
    # A default RangeIndex carries no information; any other index is kept as a column.
    plain = isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0
    frame.to_csv(path, index=not plain)


def _load_csv(path: str) -> Any:
    import pandas as pd

    return pd.read_csv(path)


# Parquet holds tables: a pandas Series is written as a one-column table whose schema
# metadata says so, and read back as the Series it was (name included).
_SERIES_KEY = b"luigiflow_series"


def _save_parquet(obj: Any, path: str) -> None:
    import pandas as pd

    if not isinstance(obj, pd.Series):
        _as_frame(obj).to_parquet(path)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(obj.to_frame(name="values"))
    marker = json.dumps({"name": obj.name}, default=str).encode()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _SERIES_KEY: marker})
    pq.write_table(table, path)


def _load_parquet(path: str) -> Any:
    return _parquet_value(path)


def _parquet_value(source: Any) -> Any:
    import pyarrow.parquet as pq

    table = pq.read_table(source)
    frame = table.to_pandas()
    marker = (table.schema.metadata or {}).get(_SERIES_KEY)
    if marker is None:
        return frame
    return frame.iloc[:, 0].rename(json.loads(marker)["name"])


def _save_npy(obj: Any, path: str) -> None:
    import numpy as np

    np.save(path, np.asarray(obj), allow_pickle=False)


def _load_npy(path: str) -> Any:
    import numpy as np

    return np.load(path, allow_pickle=False)


SERIALIZERS: dict[str, tuple[SaveFn, Callable[[str], Any]]] = {
    ".pkl": (_save_pickle, _load_pickle),
    ".pickle": (_save_pickle, _load_pickle),
    ".joblib": (_save_joblib, _load_joblib),
    ".json": (_save_json, _load_json),
    ".txt": (_save_text, _load_text),
    ".csv": (_save_csv, _load_csv),
    ".parquet": (_save_parquet, _load_parquet),
    ".npy": (_save_npy, _load_npy),
}


def extension(filename: str) -> str:
    return pathlib.PurePosixPath(filename).suffix.lower()


def validate_filename(filename: Any) -> str | None:
    """What is wrong with an artifact file name, or None."""
    if not isinstance(filename, str) or not filename.strip():
        return f"file name must be a non-empty string, got {filename!r}"
    pure = pathlib.PurePosixPath(filename)
    if pure.is_absolute() or ".." in pure.parts or "\\" in filename:
        return f"file name {filename!r} must be a relative path inside the run"
    return None


# Extensions that make a str look like a file name rather than a value, besides the
# serializers' own.
_FILE_EXTENSIONS = frozenset(
    {".bin", ".pt", ".pth", ".ckpt", ".safetensors", ".onnx", ".h5", ".hdf5", ".pb", ".zip"}
    | {".gz", ".tar", ".tgz", ".bz2", ".xz", ".zst", ".feather", ".arrow", ".tsv", ".xlsx"}
    | {".png", ".jpg", ".jpeg", ".svg", ".pdf", ".html", ".yaml", ".yml", ".model", ".db"}
)


def looks_like_a_path(value: Any) -> bool:
    """A `str` that names an existing file or folder, or whose form suggests a file name
    (no whitespace, a data-file extension): saving it stores the text, which the user
    may not mean (before 0.2.0 such a str stored the file)."""
    if not isinstance(value, str) or not value or len(value) > 4096 or "\n" in value:
        return False
    if os.path.exists(value):
        return True
    suffix = extension(value)
    no_space = not any(c.isspace() for c in value)
    return no_space and (suffix in SERIALIZERS or suffix in _FILE_EXTENSIONS)


def write_value(
    name: str, value: Any, filename: str, dest: pathlib.Path, owned: bool = False
) -> str:
    """Write one artifact value to `dest`, choosing how from its form and extension.

    Only a `pathlib.Path` means "this file or folder"; every `str` is a value (a str
    that happens to name a path is still a value). `owned` says the path is luigiflow's
    own staging file, which may be moved instead of copied. Returns how it was placed.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if _custom(value):
        obj, save_fn = value[0], value[1]
        save_fn(obj, str(dest))
        if not dest.exists():
            raise ArtifactError(
                f"artifact {name!r}: the save function {getattr(save_fn, '__name__', save_fn)} "
                f"did not create {dest.name}; it must write to the path it is given"
            )
        return "save_fn"
    if isinstance(value, pathlib.Path):
        if not value.exists():
            raise ArtifactError(f"artifact {name!r}: path {value} does not exist")
        return artifact_files.place(value, dest, owned)
    ext = extension(filename)
    if ext not in SERIALIZERS:
        known = ", ".join(sorted(SERIALIZERS))
        hint = ""
        if isinstance(value, str) and os.path.exists(value):
            hint = f"; a str is a value: to store the file itself pass pathlib.Path({value!r})"
        raise ArtifactError(
            f"artifact {name!r} ({filename}): no serializer for {ext or 'a name without extension'}"
            f" (known: {known}); pass (obj, save_fn) or the pathlib.Path of a file you wrote{hint}"
        )
    SERIALIZERS[ext][0](value, str(dest))
    return "serialized"


def _custom(value: Any) -> bool:
    """`(obj, save_fn)` or `(obj, save_fn, load_fn)`."""
    return (
        isinstance(value, tuple) and len(value) in (2, 3) and all(callable(fn) for fn in value[1:])
    )


def loader_reference(name: str, value: Any) -> str | None:
    """`module:qualname` of the load function of an `(obj, save_fn, load_fn)` value (None
    for any other value). Only the name is recorded on the run: the process that loads
    the artifact later (a downstream task, a notebook) imports the function by it, so it
    must be defined at the top level of a module (a lambda or a nested function is not)."""
    if not (_custom(value) and len(value) == 3):
        return None
    load_fn = value[2]
    module = getattr(load_fn, "__module__", None)
    qualname = getattr(load_fn, "__qualname__", "")
    found = _find(module, qualname) if module and "<" not in qualname else None
    if found is not load_fn or _standard(module):
        raise ArtifactError(
            f"artifact {name!r}: its load function {qualname or load_fn!r} cannot be "
            "imported by name, which is how a later process finds it; define it at the "
            "top level of a module of yours (not a lambda, nor inside a function, nor a "
            "standard-library function)"
        )
    return f"{module}:{qualname}"


def _standard(module: str | None) -> bool:
    return (module or "").partition(".")[0] in sys.stdlib_module_names | {"builtins"}


def _find(module: str | None, qualname: str) -> Any:
    if module is None:
        return None
    found: Any = sys.modules.get(module)
    if found is None:
        try:
            found = importlib.import_module(module)
        except ImportError:
            return None
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found


def load_with(reference: str, path: str, where: str) -> Any:
    """Load an artifact with the function its run recorded (`module:qualname`)."""
    module, _, qualname = reference.partition(":")
    if _standard(module):
        # A record naming `os:system` would run the file's path as a command: a load
        # function is the user's own code, never a standard-library function.
        raise ArtifactError(
            f"{where} names {reference} as its load function, a standard-library "
            "function, which is never called on a path; the run was not made by "
            "save((obj, save_fn, load_fn)). Delete it so luigiflow recomputes it"
        )
    load_fn = _find(module, qualname)
    if not callable(load_fn):
        raise ArtifactError(
            f"{where} is read by {reference}, which cannot be imported here; make its "
            f"module importable (on sys.path) or read the file at {path}"
        )
    return load_fn(path)


def _pickle_from(data: bytes) -> Any:
    return pickle.loads(data)


def _joblib_from(data: bytes) -> Any:
    import joblib

    return joblib.load(io.BytesIO(data))


def _csv_from(data: bytes) -> Any:
    import pandas as pd

    return pd.read_csv(io.BytesIO(data))


def _parquet_from(data: bytes) -> Any:
    return _parquet_value(io.BytesIO(data))


def _npy_from(data: bytes) -> Any:
    import numpy as np

    return np.load(io.BytesIO(data), allow_pickle=False)


# The same formats read from bytes already in memory: a verified load deserializes the
# exact bytes it hashed, never the file again (which could change in between).
FROM_BYTES: dict[str, Callable[[bytes], Any]] = {
    ".pkl": _pickle_from,
    ".pickle": _pickle_from,
    ".joblib": _joblib_from,
    ".json": lambda data: json.loads(data.decode("utf-8")),
    ".txt": lambda data: data.decode("utf-8"),
    ".csv": _csv_from,
    ".parquet": _parquet_from,
    ".npy": _npy_from,
}


def read_bytes(data: bytes, filename: str) -> Any:
    """Deserialize an artifact's bytes by the extension of `filename`."""
    return FROM_BYTES[extension(filename)](data)


def read_value(path: str, filename: str) -> Any:
    """Deserialize an artifact by extension; unknown extensions give the local path."""
    ext = extension(filename)
    if ext in SERIALIZERS and os.path.isfile(path):
        return SERIALIZERS[ext][1](path)
    return path
