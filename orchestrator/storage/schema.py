"""elastiq's own tables, beside Optuna's in the same database (SQLAlchemy 2).

One module holds every model. The schema is created once, by the driver,
before any worker starts; its version is recorded in `elastiq_schema`.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from search_space import InputError

SCHEMA_VERSION = 6  # 2 added elastiq_exports; 3 how each latency was measured (source, drift, raw), and batches;
# 4 the fine-tuning stage (elastiq_finetune_candidates, elastiq_finetune_rungs); 5 elastiq_latency.backend renamed
# measured_on (it holds what a figure was measured on: runtime, version, device, graph format); 6 a latency is no
# longer a median: median_ms renamed latency_ms (raw_median_ms too), and the gap between its halves added
_READABLE_VERSIONS = (1, 2, 3, 4, 5, 6)  # older schemas are upgraded on connecting
# columns added to existing tables, by the version that added them (new tables come from create_all)
_ADDED_COLUMNS = {3: [("elastiq_latency", "source", "VARCHAR(16)"), ("elastiq_latency", "drift", "FLOAT"),
                      ("elastiq_latency", "raw_median_ms", "FLOAT")],
                  6: [("elastiq_latency", "gap", "FLOAT")]}
# columns renamed, by the version that renamed them: (table, old name, new name)
_RENAMED_COLUMNS = {5: [("elastiq_latency", "backend", "measured_on")],
                    6: [("elastiq_latency", "median_ms", "latency_ms"), ("elastiq_latency", "raw_median_ms",
                                                                         "raw_latency_ms")]}


class StorageError(InputError):
    """A storage URL that is malformed, unreachable, or holds an incompatible schema."""


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)  # naive UTC: SQLite keeps no zone


class Base(DeclarativeBase):
    pass


class SchemaInfo(Base):
    __tablename__ = "elastiq_schema"
    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=_now)


class TargetRow(Base):
    __tablename__ = "elastiq_targets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    settings: Mapped[str] = mapped_column(Text)  # JSON of HardwareTarget
    fingerprint: Mapped[str] = mapped_column(Text)  # JSON of the machine it was first measured on
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=_now)


class LatencyRow(Base):
    __tablename__ = "elastiq_latency"
    __table_args__ = (UniqueConstraint("target_id", "arch_key", "measured_on"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("elastiq_targets.id"), index=True)
    arch_key: Mapped[str] = mapped_column(String(64))
    arch: Mapped[str] = mapped_column(Text)
    measured_on: Mapped[str] = mapped_column(String(64))  # HardwareTarget.measured_on
    latency_ms: Mapped[float] = mapped_column(Float)
    iqr_ms: Mapped[float] = mapped_column(Float)
    cv: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer)
    flagged: Mapped[bool] = mapped_column(Boolean)
    passes: Mapped[int] = mapped_column(Integer, default=1)
    pass_cv: Mapped[float] = mapped_column(Float, default=0.0)
    gap: Mapped[float | None] = mapped_column(Float, nullable=True)  # LatencyMeasurement.gap; None before schema 6
    # "measure" (the dataset, measured alone: its scale), "search" or "export" (measured beside drift
    # probes and put on the dataset's scale: latency_ms = raw_latency_ms / drift); None before schema 3
    source: Mapped[str | None] = mapped_column(String(16), nullable=True)
    drift: Mapped[float | None] = mapped_column(Float, nullable=True)
    raw_latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    fingerprint: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=_now)


class SupernetRow(Base):
    """A supernet checkpoint a study evaluates with; its sha256 is the cache's key."""

    __tablename__ = "elastiq_supernets"
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(Text)
    space_hash: Mapped[str] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(200))
    steps: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=_now)


class PredictorRow(Base):
    """A fitted predictor as data (`predictors.persist`): JSON of its choice and training rows."""

    __tablename__ = "elastiq_predictors"
    id: Mapped[int] = mapped_column(primary_key=True)
    study: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # latency | accuracy
    target: Mapped[str | None] = mapped_column(String(200), nullable=True)
    version: Mapped[int] = mapped_column(Integer)
    n_train: Mapped[int] = mapped_column(Integer)
    chosen: Mapped[str] = mapped_column(String(32))
    cv_scores: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    artifact: Mapped[bytes] = mapped_column(LargeBinary)  # UTF-8 JSON; rows of version 1 (pickles) are never read
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=_now)


class EvaluationRow(Base):
    """The evaluation cache: nothing is evaluated twice (DESIGN decision 3)."""

    __tablename__ = "elastiq_evaluations"
    __table_args__ = (UniqueConstraint("supernet_sha256", "split", "target", "arch_key", "finetune_steps"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    supernet_sha256: Mapped[str] = mapped_column(String(64))
    split: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(200))
    arch_key: Mapped[str] = mapped_column(String(64))
    finetune_steps: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=_now)


class BatchRow(Base):
    """A batch of a search: opened before its trials are, closed with their ids once all are open. A
    crash while they were being opened leaves it open (propose it again: nothing of it was evaluated);
    after, its trials that are not complete run again, themselves, exactly as the batch was."""

    __tablename__ = "elastiq_batches"
    id: Mapped[int] = mapped_column(primary_key=True)
    study: Mapped[str] = mapped_column(String(200), index=True)
    trials: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list of Optuna trial ids; None: opening
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=_now)


class HypervolumeRow(Base):
    __tablename__ = "elastiq_hypervolume"
    id: Mapped[int] = mapped_column(primary_key=True)
    study: Mapped[str] = mapped_column(String(200), index=True)
    evaluations: Mapped[int] = mapped_column(Integer)
    hypervolume: Mapped[float] = mapped_column(Float)
    pareto_size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=_now)


class ExportRow(Base):
    """An export of a study's models: where it went and the sha256 of its manifest."""

    __tablename__ = "elastiq_exports"
    id: Mapped[int] = mapped_column(primary_key=True)
    study: Mapped[str] = mapped_column(String(200), index=True)
    out_dir: Mapped[str] = mapped_column(Text)
    trials: Mapped[str] = mapped_column(Text)  # JSON list of trial numbers
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text)  # JSON of the export's honesty figures
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=_now)


class FinetuneCandidateRow(Base):
    """An arch of a fine-tuning run (one run per study and settings): its search trial, its latency and
    inherited accuracy, and how its training ended (None while it may go on)."""

    __tablename__ = "elastiq_finetune_candidates"
    __table_args__ = (UniqueConstraint("study", "run_key", "arch_key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    study: Mapped[str] = mapped_column(String(200), index=True)
    run_key: Mapped[str] = mapped_column(String(64))  # sha256 of the run's settings and supernet
    arch_key: Mapped[str] = mapped_column(String(64))
    trial: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[str] = mapped_column(Text)  # JSON: the search's metrics of the arch (inherited accuracy)
    ended: Mapped[str | None] = mapped_column(String(16), nullable=True)  # "finished" | "stopped"
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=_now)


class FinetuneRungRow(Base):
    """One validation result of a candidate, with the checkpoint of its weights at that rung."""

    __tablename__ = "elastiq_finetune_rungs"
    __table_args__ = (UniqueConstraint("study", "run_key", "arch_key", "rung"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    study: Mapped[str] = mapped_column(String(200), index=True)
    run_key: Mapped[str] = mapped_column(String(64))
    arch_key: Mapped[str] = mapped_column(String(64))
    rung: Mapped[int] = mapped_column(Integer)
    steps: Mapped[int] = mapped_column(Integer)
    accuracy: Mapped[float] = mapped_column(Float)  # on the validation split
    seconds: Mapped[float] = mapped_column(Float)  # training and evaluation time of this rung
    checkpoint: Mapped[str] = mapped_column(Text)
    checkpoint_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(), default=_now)


class LeaseRow(Base):
    """Who drives a study: no two drivers at once (DESIGN decision 2)."""

    __tablename__ = "elastiq_leases"
    study: Mapped[str] = mapped_column(String(200), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime())


def masked(url: str) -> str:
    """The URL with any password replaced, for every log and error line."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<malformed URL>"


def connect(url: str, create: bool = True) -> Engine:
    """An engine on `url`, checked reachable; with `create`, the schema is made if absent."""
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise StorageError(f"storage {masked(url)}: not a usable database URL ({type(exc).__name__})") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        with engine.connect() as connection:
            names = set(inspect(connection).get_table_names())
    except SQLAlchemyError as exc:
        engine.dispose()
        text = str(getattr(exc, "orig", exc))
        reason = text.splitlines()[0] if text else type(exc).__name__
        raise StorageError(f"storage {masked(url)}: cannot connect ({reason.replace(url, masked(url))})") from None
    if "elastiq_schema" in names:
        with Session(engine) as session:
            version = session.scalar(select(SchemaInfo.version))
        if version not in _READABLE_VERSIONS:
            raise StorageError(f"storage {masked(url)}: elastiq schema version {version}, this elastiq reads "
                               f"versions {', '.join(map(str, _READABLE_VERSIONS))}")
        if version != SCHEMA_VERSION or not set(Base.metadata.tables) <= names:
            _upgrade(engine, version, url)  # readers need the new columns too: upgraded whoever connects
    elif create:
        try:
            Base.metadata.create_all(engine)
            with Session(engine) as session, session.begin():
                session.add(SchemaInfo(version=SCHEMA_VERSION))
        except OperationalError as exc:
            raise StorageError(f"storage {masked(url)}: cannot create the schema "
                               f"({str(exc.orig).splitlines()[0]})") from None
    return engine


def _upgrade(engine: Engine, version: int, url: str) -> None:
    """Add what versions after `version` added: tables, then columns (nullable: old rows keep NULL); rename
    what they renamed."""
    try:
        Base.metadata.create_all(engine)
        with engine.begin() as connection:
            for added in range(version + 1, SCHEMA_VERSION + 1):
                for table, old, new in _RENAMED_COLUMNS.get(added, []):
                    present = {c["name"] for c in inspect(connection).get_columns(table)}
                    if old in present and new not in present:
                        connection.execute(text(f"ALTER TABLE {table} RENAME COLUMN {old} TO {new}"))
                for table, column, sql_type in _ADDED_COLUMNS.get(added, []):
                    present = {c["name"] for c in inspect(connection).get_columns(table)}
                    if column not in present:
                        connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}"))
            connection.execute(update(SchemaInfo).values(version=SCHEMA_VERSION))
    except SQLAlchemyError as exc:
        raise StorageError(f"storage {masked(url)}: cannot upgrade the elastiq schema from version {version} "
                           f"({str(getattr(exc, 'orig', exc)).splitlines()[0]})") from None


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def database_failure(exc: BaseException) -> str | None:
    """The first line of a database error that ended a run (a server restarted or gone), else None.
    Optuna reports such errors as its own StorageInternalError, caused by SQLAlchemy's."""
    for error in (exc, exc.__cause__, exc.__context__):
        if isinstance(error, DBAPIError):
            text = str(error.orig) if error.orig is not None else str(error)
            return (text.strip().splitlines() or [type(error.orig).__name__])[0]
    return None


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def after_every_write(callback) -> None:
    """Call `callback()` after every INSERT, UPDATE or DELETE any engine of this process runs, its transaction
    still open: where a crash test stops a process at a point of its progress."""

    @event.listens_for(Engine, "after_cursor_execute")
    def _written(conn, cursor, statement, *args) -> None:
        if statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
            callback()
