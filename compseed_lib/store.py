"""Run directory and ledger: where every stage reads and writes.

Layout of `runs/<name>/`:
  config.yaml            the resolved config plus library versions
  images/<stage>/<prompt_id>_s<seed:06d>.png
  ledger.sqlite          table `images` (a row per image) and `judgements` (a row per question asked)
  ledger-parts/*.sqlite  under `accelerate launch`: each process's rows, merged into ledger.sqlite by key
  tables/*.csv, figures/*.png

Every write is atomic (temp file + rename) and every row has a primary key, so a stage killed at
any point and started again skips what is done and never duplicates a row. SQLite in WAL mode with
a busy timeout lets several processes (one per shard) write at once on one machine; across machines
(or to keep writers apart) each shard writes its own part (`run.part_ledger(k, n)`) and `run.merge_parts()`
folds every part into the ledger by key (a part left by a killed launch is merged by the next one).

Usage:
    run = Run.create(cfg)            # or Run.open("runs/mini")
    run.image_path("base", pid, 7)   # -> runs/mini/images/base/n6e108f3920_s000007.png
    run.ledger.images("base")        # DataFrame
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import yaml

from . import interrupt

IMAGE_COLUMNS = ["stage", "prompt_id", "seed", "prompt", "kind", "category", "target", "model",
                 "sampler", "steps", "guidance", "height", "width", "generator_device", "dtype",
                 "path", "sha256", "created"]
JUDGEMENT_COLUMNS = ["stage", "prompt_id", "seed", "judge_model", "question", "image_sha256",
                     "raw_answer", "parsed_answer", "correct", "created"]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
  stage TEXT NOT NULL, prompt_id TEXT NOT NULL, seed INTEGER NOT NULL, prompt TEXT, kind TEXT,
  category TEXT, target TEXT, model TEXT, sampler TEXT, steps INTEGER, guidance REAL,
  height INTEGER, width INTEGER, generator_device TEXT, dtype TEXT, path TEXT, sha256 TEXT,
  created REAL, PRIMARY KEY (stage, prompt_id, seed));
CREATE TABLE IF NOT EXISTS judgements (
  stage TEXT NOT NULL, prompt_id TEXT NOT NULL, seed INTEGER NOT NULL, judge_model TEXT NOT NULL,
  question TEXT NOT NULL, image_sha256 TEXT, raw_answer TEXT, parsed_answer TEXT, correct INTEGER,
  created REAL, PRIMARY KEY (stage, prompt_id, seed, judge_model, question));
CREATE INDEX IF NOT EXISTS judgement_cache ON judgements (image_sha256, judge_model, question);
"""
PARTS = "ledger-parts"
_SAFE_NAME = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def check_safe_name(name: str, what: str) -> str:
    """A stage, run or prompt id that becomes a path part: no separators, no '..'."""
    if not name or not set(name) <= _SAFE_NAME or name.startswith(".") or ".." in name:
        raise ValueError(f"bad {what} {name!r}: use letters, digits, '_', '-', '.' (no path parts)")
    return name


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    return sha256_bytes(Path(path).read_bytes())


class CorruptImageError(ValueError):
    """An image file is missing or differs from its ledger row (the message names the file)."""


REGENERATE_HINT = ("`compseed run <config>` makes it again (a file that does not match the ledger is "
                   "regenerated), then judges it")


def _umask() -> int:
    """The process umask, read without changing it where the system allows (Linux /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)  # elsewhere: read it by setting it, and put it straight back
    os.umask(old)
    return old


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part.
    The file gets the permissions of a plain `open()` under the user's umask (not mkstemp's 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Text version of `atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def image_filename(prompt_id: str, seed: int) -> str:
    """File name of the image for (prompt id, seed): never raw prompt text."""
    check_safe_name(prompt_id, "prompt id")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"bad seed {seed!r}: seeds are non-negative integers")
    return f"{prompt_id}_s{seed:06d}.png"


class Ledger:
    """The run's SQLite ledger: rows for images and judgements, keyed so re-runs never duplicate."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as con:
            con.executescript(_SCHEMA)

    @contextmanager
    def connect(self):
        """A connection in WAL mode that waits for other writers instead of failing."""
        con = sqlite3.connect(self.path, timeout=60)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA busy_timeout=60000")
            with con:
                yield con
        finally:
            con.close()

    def _insert(self, table: str, cols: list[str], rows: list[dict], on_conflict: str) -> None:
        if not rows:
            return
        with self.connect() as con:
            con.executemany(f"INSERT OR {on_conflict} INTO {table} ({','.join(cols)}) VALUES "
                            f"({','.join('?' * len(cols))})",
                            [[r.get(c, time.time() if c == "created" else None) for c in cols] for r in rows])

    def add_images(self, rows: list[dict]) -> None:
        """Insert or replace image rows (a regenerated image replaces its row)."""
        self._insert("images", IMAGE_COLUMNS, rows, "REPLACE")

    def add_judgements(self, rows: list[dict]) -> None:
        """Insert judgement rows. An existing row of the same image version (same sha256) is kept as it
        is; a row that judged an earlier version of the image (another sha256) is replaced."""
        if not rows:
            return
        with self.connect() as con:
            con.executemany(f"{_UPSERT_JUDGEMENT} VALUES ({','.join('?' * len(JUDGEMENT_COLUMNS))}) {_ON_CONFLICT}",
                            [[r.get(c, time.time() if c == "created" else None) for c in JUDGEMENT_COLUMNS]
                             for r in rows])

    def merge(self, part: str | Path) -> tuple[int, int]:
        """Fold another ledger file's rows into this one by key (images replaced, judgements as in
        `add_judgements`); (image rows, judgement rows) read from it."""
        with self.connect() as con:
            con.execute("ATTACH DATABASE ? AS part", (str(part),))
            try:
                n_img = con.execute("SELECT COUNT(*) FROM part.images").fetchone()[0]
                n_jud = con.execute("SELECT COUNT(*) FROM part.judgements").fetchone()[0]
                con.execute(f"INSERT OR REPLACE INTO images ({','.join(IMAGE_COLUMNS)}) "
                            f"SELECT {','.join(IMAGE_COLUMNS)} FROM part.images")
                con.execute(f"{_UPSERT_JUDGEMENT} SELECT {','.join(JUDGEMENT_COLUMNS)} FROM part.judgements "
                            f"WHERE true {_ON_CONFLICT}")  # WHERE: SQLite's parsing rule for upsert-select
                con.commit()
            finally:
                con.execute("DETACH DATABASE part")
        return n_img, n_jud

    def drop_stage(self, stage: str) -> int:
        """Delete a stage's image and judgement rows (its images came from a model that is gone); the
        number of image rows deleted."""
        with self.connect() as con:
            con.execute("DELETE FROM judgements WHERE stage=?", (stage,))
            return con.execute("DELETE FROM images WHERE stage=?", (stage,)).rowcount

    def cached_answer(self, image_sha256: str, judge_model: str, question: str) -> str | None:
        """Raw answer already given for this image hash, judge and question, if any."""
        with self.connect() as con:
            row = con.execute("SELECT raw_answer FROM judgements WHERE image_sha256=? AND "
                              "judge_model=? AND question=? LIMIT 1",
                              (image_sha256, judge_model, question)).fetchone()
        return None if row is None else row[0]

    def query(self, sql: str, params: tuple = ()) -> pd.DataFrame:
        """Run a read query and return a DataFrame."""
        with self.connect() as con:
            return pd.read_sql_query(sql, con, params=params)

    def images(self, stage: str | None = None) -> pd.DataFrame:
        """Image rows, of one stage or all."""
        if stage is None:
            return self.query("SELECT * FROM images ORDER BY stage, prompt_id, seed")
        return self.query("SELECT * FROM images WHERE stage=? ORDER BY prompt_id, seed", (stage,))

    def judgements(self, stage: str | None = None, judge_model: str | None = None) -> pd.DataFrame:
        """Judgement rows joined with their image rows (prompt, category, target ...)."""
        sql = ("SELECT j.*, i.prompt, i.kind, i.category, i.target, i.model, i.path FROM judgements j "
               "JOIN images i USING (stage, prompt_id, seed) WHERE 1=1")
        params: list = []
        if stage is not None:
            sql += " AND j.stage=?"
            params.append(stage)
        if judge_model is not None:
            sql += " AND j.judge_model=?"
            params.append(judge_model)
        df = self.query(sql + " ORDER BY j.stage, j.prompt_id, j.seed", tuple(params))
        df["correct"] = df["correct"].map(lambda v: None if pd.isna(v) else bool(v)).astype("boolean")
        return df


_JUDGEMENT_KEY = ("stage", "prompt_id", "seed", "judge_model", "question")
_UPSERT_JUDGEMENT = f"INSERT INTO judgements ({','.join(JUDGEMENT_COLUMNS)})"
_ON_CONFLICT = (f"ON CONFLICT ({','.join(_JUDGEMENT_KEY)}) DO UPDATE SET "
                f"{', '.join(f'{c}=excluded.{c}' for c in JUDGEMENT_COLUMNS if c not in _JUDGEMENT_KEY)} "
                f"WHERE judgements.image_sha256 IS NOT excluded.image_sha256")


class Run:
    """A run directory: config, images, ledger, tables and figures."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.ledger = Ledger(self.root / "ledger.sqlite")

    @classmethod
    def create(cls, cfg) -> Run:
        """Create (or reopen) `cfg.run_dir` and write the resolved config with library versions."""
        check_safe_name(cfg.name, "run name")
        run = cls(cfg.run_dir)
        data = cfg.to_dict()
        data["versions"] = library_versions()
        atomic_write_text(run.root / "config.yaml", yaml.safe_dump(data, sort_keys=False))
        return run

    @classmethod
    def open(cls, root: str | Path) -> Run:
        """Open an existing run directory (it must hold config.yaml)."""
        root = Path(root)
        if not (root / "config.yaml").is_file():
            raise FileNotFoundError(f"no run at {root}: config.yaml missing (start it with `compseed run <config> "
                                    f"--only 00_prompts`)")
        return cls(root)

    def config(self):
        """The run's resolved config as a RunConfig."""
        from .config import config_from_dict

        data = yaml.safe_load((self.root / "config.yaml").read_text())
        data.pop("versions", None)
        return config_from_dict(data)

    def part_ledger(self, index: int, count: int) -> Ledger:
        """The ledger part that shard `index` of `count` writes (`merge_parts` folds it in)."""
        return Ledger(self.root / PARTS / f"part-{index:04d}-of-{count:04d}.sqlite")

    def merge_parts(self) -> int:
        """Fold every ledger part into the ledger by key and delete it; the number of rows merged."""
        rows = 0
        for part in sorted((self.root / PARTS).glob("part-*.sqlite")):
            rows += sum(self.ledger.merge(part))
            for f in (part, part.with_name(part.name + "-wal"), part.with_name(part.name + "-shm")):
                f.unlink(missing_ok=True)
        return rows

    def stage_dir(self, stage: str) -> Path:
        """The folder of an image stage's files."""
        return self.root / "images" / check_safe_name(stage, "stage")

    def image_path(self, stage: str, prompt_id: str, seed: int) -> Path:
        """Where the image of (stage, prompt id, seed) lives."""
        return self.stage_dir(stage) / image_filename(prompt_id, seed)

    def drop_stage(self, stage: str) -> int:
        """Forget an image stage whose model has changed (a fine-tune trained again into the same folder):
        its ledger rows first, then its image files, so a kill between the two leaves files that the next
        `generate` overwrites, never rows without their model. The number of image rows dropped."""
        folder = self.stage_dir(stage)  # the name checked before anything is deleted
        n = self.ledger.drop_stage(stage)
        shutil.rmtree(folder, ignore_errors=True)
        return n

    def verified_image(self, row) -> Path:
        """The file of an image ledger row, checked against the row's sha256; `CorruptImageError` naming
        the file (and what to run) when it is missing or differs."""
        return self._verified(row)[0]

    def _verified(self, row) -> tuple[Path, bytes]:
        """(path, bytes) of an image ledger row's file, read once and checked against the row's sha256."""
        row = row if hasattr(row, "prompt_id") else pd.Series(row)
        seed = int(row.seed)
        path = self._image_file(row)
        where = f"ledger row {row.stage}/{row.prompt_id}/seed {seed}"
        if not isinstance(row.sha256, str) or not row.sha256:
            raise CorruptImageError(f"image file {path} has no sha256 in its {where}: {REGENERATE_HINT}")
        if not path.is_file():
            raise CorruptImageError(f"image file {path} is missing ({where}): {REGENERATE_HINT}")
        data = path.read_bytes()
        if sha256_bytes(data) != row.sha256:
            raise CorruptImageError(f"image file {path} is corrupt or was changed: its sha256 differs from "
                                    f"its {where} ({row.sha256[:12]}…): {REGENERATE_HINT}")
        return path, data

    def _image_file(self, row) -> Path:
        """Where a row's file lives: its `path` (relative to the run, or as given), else the default."""
        default = self.image_path(row.stage, row.prompt_id, int(row.seed))
        if not isinstance(row.path, str) or not row.path:
            return default
        path = Path(row.path)
        if path.is_absolute():
            return path
        for candidate in (self.root / path, path, default):
            if candidate.is_file():
                return candidate
        return self.root / path

    def read_image(self, row):
        """The RGB PIL image of an image ledger row, verified first (see `verified_image`)."""
        import io

        from PIL import Image

        with Image.open(io.BytesIO(self._verified(row)[1])) as im:  # the bytes just checked, not a second read
            return im.convert("RGB")

    def save_table(self, df: pd.DataFrame, name: str) -> Path:
        """Write a table as CSV under tables/ (atomically)."""
        path = self.root / "tables" / f"{check_safe_name(name, 'table name')}.csv"
        atomic_write_text(path, df.to_csv(index=False))
        return path

    def load_table(self, name: str) -> pd.DataFrame:
        """Read a table written by `save_table`."""
        path = self.root / "tables" / f"{check_safe_name(name, 'table name')}.csv"
        if not path.is_file():
            raise FileNotFoundError(f"table {name!r} not found in {self.root}/tables (run its stage first)")
        return pd.read_csv(path)

    def save_json(self, obj, name: str) -> Path:
        """Write JSON under tables/ (atomically)."""
        path = self.root / "tables" / f"{check_safe_name(name, 'name')}.json"
        atomic_write_text(path, json.dumps(obj, indent=2, default=str))
        return path

    def save_figure(self, fig, name: str, dpi: int = 120) -> Path:
        """Save a matplotlib figure as PNG under figures/ (atomically)."""
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        path = self.root / "figures" / f"{check_safe_name(name, 'figure name')}.png"
        atomic_write_bytes(path, buf.getvalue())
        return path


class RunInUse(RuntimeError):
    """Another live process holds the run directory's lock."""


def lock_path(run_dir: str | Path) -> Path:
    """`runs/.<name>.lock`: beside the run directory, so a refused start writes nothing inside it."""
    run_dir = Path(run_dir)
    return run_dir.parent / f".{run_dir.name}.lock"


@contextmanager
def run_lock(run_dir: str | Path, what: str = "compseed run"):
    """Hold the run directory's lock for the duration: a second holder is refused at once with
    RunInUse naming the process that has it. The lock is an flock on `lock_path`, which also records the
    holder's pid; the kernel drops it when the holder dies (even by kill -9), so a dead process's lock
    file is taken over, with a log line naming it. Removed on release."""
    import fcntl
    import logging
    import socket

    run_dir, path = Path(run_dir), lock_path(run_dir)
    made = not path.parent.exists()  # removed again on release if still empty: a refused start leaves nothing
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunInUse(f"run {run_dir} is in use by process {holder.get('pid', '?')} ({holder.get('what', '?')} "
                           f"on {holder.get('host', '?')}, since {holder.get('since', '?')}): wait for it to end or "
                           f"stop it; two processes writing one run would mix their results") from None
        try:  # the file we locked must still be the one at `path` (a releasing holder unlinks it)
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    stale = _read_holder(fd)
    if stale.get("pid"):
        logging.getLogger(__name__).info("taking over the lock of run %s from process %s, which is gone",
                                         run_dir, stale["pid"])
    me = {"pid": os.getpid(), "what": what, "host": socket.gethostname(),
          "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    interrupt.hold(path)  # removed by a forced exit after Ctrl-C too
    try:
        yield path
    finally:
        interrupt.release(path)
        try:
            os.unlink(path)
        finally:
            os.close(fd)
        if made:
            with contextlib.suppress(OSError):
                path.parent.rmdir()


def _read_holder(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        return json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}


def library_versions() -> dict:
    """Versions of the libraries that decide pixels."""
    import importlib.metadata as md

    out = {}
    for pkg in ("compseed", "torch", "diffusers", "transformers", "numpy", "pillow"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out
