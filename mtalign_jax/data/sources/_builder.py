"""TF-less tfds builders (ArrayRecord) shared by every source.

Each source subclasses `SourceBuilder`, declares its `FIELDS` (name -> kind) and implements
`read(path, **options) -> list[dict]`, a pure reader of the real file format. The builder is a
`tfds.core.GeneratorBasedBuilder` prepared with `file_format="array_record"` and read back with
`as_data_source()`: this works with tensorflow-datasets 4.9.10 and no TensorFlow installed.

- The user's real file is given by path (`SourceConfig.path`); the config name is a fingerprint of
  the file's bytes and the reader options, so a different or edited file builds afresh.
- Splits come from `SPLITS` (name -> fraction), assigned by prompt hash (`splits.py`), so they are
  deterministic and disjoint by prompt. `split="all"` returns every example in file order.
- Kinds: `text`, `int`, `bool`, `text_list`, `int_list`, and `json` (any JSON value, stored as
  text; used for nested metadata and for floats, which tf.Example would round to float32).
- Prepared data lives under `data_dir` (default `$MTALIGN_DATA_DIR`, else
  `~/.cache/mtalign_jax/tfds`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import sys
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import utils as tfds_utils

from mtalign_jax.data.sources.splits import prompt_of, split_by_prompt

SPLIT_SALT = "split"


def default_data_dir() -> str:
    """Where prepared sources are cached: `$MTALIGN_DATA_DIR` or `~/.cache/mtalign_jax/tfds`."""
    return os.environ.get("MTALIGN_DATA_DIR",
                          str(pathlib.Path.home() / ".cache" / "mtalign_jax" / "tfds"))


def shared_data_dir() -> pathlib.Path:
    """The offline data folder: `$MTALIGN_SHARED_DATA`, else `../shared/data` beside the project."""
    env = os.environ.get("MTALIGN_SHARED_DATA")
    if env:
        return pathlib.Path(env)
    return pathlib.Path(__file__).resolve().parents[4] / "shared" / "data"


def _feature(kind: str):
    text = tfds.features.Text()
    return {
        "text": text,
        "json": text,
        "int": np.int64,
        "bool": np.bool_,
        "text_list": tfds.features.Sequence(tfds.features.Text()),
        "int_list": tfds.features.Sequence(np.int64),
    }[kind]


def encode(fields: dict[str, str], example: dict) -> dict:
    """A reader's example -> tfds feature values (json kinds serialised)."""
    if set(example) != set(fields):
        raise KeyError(f"example keys {sorted(example)} differ from FIELDS {sorted(fields)}")
    return {k: json.dumps(example[k], ensure_ascii=False, sort_keys=True) if kind == "json"
            else example[k] for k, kind in fields.items()}


def decode(fields: dict[str, str], record: dict) -> dict:
    """A decoded tfds record -> plain Python (str, int, bool, lists, JSON values)."""
    out = {}
    for k, kind in fields.items():
        v = record[k]
        if kind == "text":
            out[k] = v.decode("utf-8")
        elif kind == "json":
            out[k] = json.loads(v.decode("utf-8"))
        elif kind == "int":
            out[k] = int(v)
        elif kind == "bool":
            out[k] = bool(v)
        elif kind == "text_list":
            out[k] = [s.decode("utf-8") for s in v]
        elif kind == "int_list":
            out[k] = [int(i) for i in v]
    return out


@dataclasses.dataclass(eq=False)
class SourceConfig(tfds.core.BuilderConfig):
    """`path`: the real file ('' for generated sources); `options`: reader options as JSON."""

    path: str = ""
    options: str = "{}"


class SourceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base class: subclasses set FIELDS, SPLITS, DEFAULT_PATH, metadata, and `read`."""

    VERSION = tfds.core.Version("1.0.0")
    FIELDS: ClassVar[dict[str, str]] = {}
    SPLITS: ClassVar[dict[str, float]] = {"train": 0.8, "validation": 0.1, "test": 0.1}
    NEEDS_FILE: ClassVar[bool] = True
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {}
    HOMEPAGE: ClassVar[str] = ""
    LICENSE: ClassVar[str] = ""
    CITATION: ClassVar[str] = ""

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls):
        """No checksums or resources beside the code: nothing is downloaded. (tfds 4.9.10 would
        otherwise import the `importlib_resources` backport, absent here, for package modules.)"""
        return None

    @classmethod
    def default_path(cls) -> pathlib.Path:
        """The offline location of the real file."""
        raise NotImplementedError

    @classmethod
    def read(cls, path, **options) -> list[dict]:
        """Parses the real file into examples with exactly the keys of FIELDS."""
        raise NotImplementedError

    @classmethod
    def split_key(cls, example: dict) -> str:
        """The text whose hash picks the split (the prompt)."""
        return prompt_of(example)

    def _info(self) -> tfds.core.DatasetInfo:
        features = {k: _feature(kind) for k, kind in self.FIELDS.items()}
        features["index"] = np.int64
        return tfds.core.DatasetInfo(
            builder=self, description=sys.modules[type(self).__module__].__doc__,
            features=tfds.features.FeaturesDict(features), homepage=self.HOMEPAGE,
            citation=self.CITATION, license=self.LICENSE, disable_shuffling=True)

    def _split_generators(self, dl_manager):
        del dl_manager  # Everything is local: nothing is downloaded.
        config = self.builder_config
        examples = self.read(config.path or None, **json.loads(config.options))
        parts = split_by_prompt(list(enumerate(examples)), self.SPLITS, salt=SPLIT_SALT,
                                key=lambda item: self.split_key(item[1]))
        return {name: self._generate_examples(items) for name, items in parts.items() if items}

    def _generate_examples(self, items):
        for index, example in items:
            yield index, {**encode(self.FIELDS, example), "index": index}


def _fingerprint(cls, path: str, options: dict) -> str:
    h = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    if path:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return "h" + h.hexdigest()[:16]


def make_builder(cls: type[SourceBuilder], path=None, data_dir=None, **options) -> SourceBuilder:
    """A builder of source `cls` for the file at `path` (default: the offline location)."""
    options = {**cls.DEFAULT_OPTIONS, **options}
    if cls.NEEDS_FILE:
        path = pathlib.Path(path) if path is not None else cls.default_path()
        if not path.is_file():
            raise ValueError(f"source file not found for {cls.__name__} (pass path=...)\n"
                             f"{path}:1: file does not exist")
        path = str(path.resolve())
    else:
        if path is not None:
            raise ValueError(f"{cls.__name__} is generated and takes no path (got {path})")
        path = ""
    config = SourceConfig(name=_fingerprint(cls, path, options), path=path,
                          options=json.dumps(options, sort_keys=True),
                          description=f"{cls.__name__} from {path or 'its generator'}")
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # silence "Using custom data configuration".
    try:
        return cls(config=config, data_dir=data_dir or default_data_dir())
    finally:
        absl_logger.setLevel(level)


def load(cls: type[SourceBuilder], path=None, split: str = "all", data_dir=None,
         **options) -> list[dict]:
    """Prepares (once, cached) and reads source `cls`; `split` is a name, "a+b" or "all"."""
    builder = make_builder(cls, path, data_dir, **options)
    with contextlib.redirect_stdout(sys.stderr):  # tfds prints its progress to stdout.
        builder.download_and_prepare(file_format="array_record")
    sources = builder.as_data_source()
    names = list(cls.SPLITS) if split == "all" else split.split("+")
    unknown = [n for n in names if n not in cls.SPLITS]
    if unknown:
        raise ValueError(f"unknown split {unknown} for {cls.__name__}; "
                         f"known: {list(cls.SPLITS)} or 'all'")
    records = []
    for name in names:
        if name in sources:  # an empty split is not written.
            source = sources[name]
            records.extend(source[i] for i in range(len(source)))
    records.sort(key=lambda r: int(r["index"]))
    return [decode(cls.FIELDS, r) for r in records]
