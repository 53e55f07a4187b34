"""Label Studio as a Dagster resource: the only code that talks to the server.

It wraps label-studio-sdk 2.x. The project is found by its title (or created with carsdepo's
labeling config), so every call is idempotent. Images are served by Label Studio's local-files
storage: a storage on the image store folder grants the project's users access to it. That
storage is never synced: tasks come from ``label_studio_tasks``, each with its image's sha256.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from dagster import ConfigurableResource
from pydantic import Field

from carsdepo_assets.labeling.config import labeling_config
from carsdepo_assets.labeling.prelabels import TaskPrediction
from carsdepo_assets.labeling.results import IMPORTED_ACTION, parse_timestamp
from carsdepo_assets.labeling.server import MissingSecret, ServerSettings, api_token
from carsdepo_assets.labeling.tasks import TaskImport, TaskRef
from carsdepo_assets.resources.state import CarsdepoHome
from carsdepo_assets.state import StateLayout

if TYPE_CHECKING:
    from label_studio_sdk import LabelStudio

# label-studio-sdk (with pandas) is imported when the resource talks to the server: the code
# location loads without it.

IMPORT_CHUNK = 500  # tasks per import request
PAGE_SIZE = 100
# Below Dagster's 60 s sensor timeout: a hung server costs the sensor a skip with the reason,
# not a tick error (one request fails before the next is sent).
HTTP_TIMEOUT_S = 20.0
STORAGE_TITLE = "carsdepo image store (serving only, do not sync)"
NEVER_MATCHES = "^$"  # a sync by mistake imports no file as a task
UNCERTAINTY_SAMPLING = "Uncertainty sampling"
FILTER_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # the only format Data Manager filters accept


class LabelStudioUnavailable(RuntimeError):
    """Label Studio could not be reached at its URL."""


class LabelStudioError(RuntimeError):
    """Label Studio answered, but refused the request."""


@dataclass(frozen=True)
class ProjectInfo:
    id: int
    title: str
    created: bool
    storage_id: int
    url: str  # the project's page in Label Studio


@dataclass(frozen=True)
class AnnotationActivity:
    """Completed annotations created or updated after a point in time, and the newest time."""

    changed: int
    latest: str | None  # ISO timestamp of the newest change, the sensor's next cursor


PROJECT_TITLE_MAX = 50  # Label Studio refuses longer project titles


class LabelStudioResource(ConfigurableResource):
    """Talks to the Label Studio server through label-studio-sdk; nothing else does."""

    url: str = Field(
        default=ServerSettings().url,
        description="Base URL of the Label Studio server (local default: `carsdepo labelstudio "
        "start` on http://127.0.0.1:8080).",
    )
    api_key: str = Field(
        default="",
        description="API token of a Label Studio user allowed to manage the project (a legacy "
        "token, sent as 'Authorization: Token ...'). Set through EnvVar('LABEL_STUDIO_API_KEY'). "
        "Empty: the local token, only for the loopback server `carsdepo labelstudio start` "
        "runs from CARSDEPO_HOME; anywhere else an empty key is an error naming the variable.",
    )
    project_title: str = Field(
        default="carsdepo car damage",
        max_length=PROJECT_TITLE_MAX,
        description="Title of the Label Studio project; found by exact title or created.",
    )
    test_project_title: str = Field(
        default="carsdepo car damage - verified test set",
        max_length=PROJECT_TITLE_MAX,
        description="Title of the project holding the verified labels pinned to the test split "
        "(imports with --keep-splits test): a project of its own, so that annotators working "
        "on new photos never edit the photos every model is judged on by accident.",
    )
    local_files_root: str = Field(
        default="",
        description="Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT. Empty: the state "
        "directory (CARSDEPO_HOME), which is what `carsdepo labelstudio start` uses.",
    )
    timeout_s: float = Field(
        default=HTTP_TIMEOUT_S,
        description="Timeout of one HTTP request, seconds (below the sensors' 60 s).",
    )
    state_path: str = Field(
        default="",
        description="The state folder whose local server may use the local token (a plain "
        "value, as CarsdepoHome.path: sensors build this resource outside a context manager). "
        "Empty: $CARSDEPO_HOME, else .carsdepo/ in the checkout.",
    )

    @classmethod
    def from_env(cls, layout: StateLayout, **overrides) -> LabelStudioResource:
        """The resource as the CLI uses it on ``layout``: ``LABEL_STUDIO_URL`` and
        ``LABEL_STUDIO_API_KEY`` (the local token only for the local server, see
        ``labeling.server.api_token``)."""
        url = ServerSettings.from_env().url
        return cls(**{"url": url, "api_key": api_token(url, layout),
                      "state_path": str(layout.root), **overrides})

    # -- project -------------------------------------------------------------------------------

    def document_root(self, images_dir: Path) -> Path:
        """The folder task image URLs are relative to (the state directory by default)."""
        root = Path(self.local_files_root) if self.local_files_root else Path(images_dir).parent
        return root.resolve()

    def ensure_project(self, images_dir: Path) -> ProjectInfo:
        """Find the project by title or create it; keep its labeling config and image storage."""
        client = self._client()
        config = labeling_config()
        with self._talking("finding the project"):
            project = self._find_project(client)
            created = project is None
            if created:
                project = client.projects.create(
                    title=self.project_title,
                    description="carsdepo: mark scratches and dents, or state 'no damage'.",
                    label_config=config,
                    show_skip_button=True,
                    enable_empty_annotation=False,
                )
            elif _normalise_xml(project.label_config or "") != _normalise_xml(config):
                client.projects.update(id=project.id, label_config=config)
        with self._talking("connecting the image store as local-files storage"):
            storage_id = self._ensure_storage(client, project.id, Path(images_dir).resolve())
        return ProjectInfo(project.id, self.project_title, created, storage_id,
                           f"{self.url.rstrip('/')}/projects/{project.id}/data")

    def for_split(self, split: str | None) -> LabelStudioResource:
        """The resource on the project that holds labels pinned to ``split``: the verified test
        project for "test", this one otherwise."""
        if split != "test" or self.project_title == self.test_project_title:
            return self
        return self.model_copy(update={"project_title": self.test_project_title})

    def project_id(self) -> int | None:
        """The project's id, or None when it does not exist yet."""
        with self._talking("finding the project"):
            project = self._find_project(self._client())
        return None if project is None else project.id

    # -- tasks ---------------------------------------------------------------------------------

    def list_tasks(self) -> list[TaskRef]:
        """Every task of the project with its annotations (empty when there is no project)."""
        project_id = self.project_id()
        return [] if project_id is None else self._tasks(project_id)

    def import_tasks(self, tasks: Sequence[dict], images_dir: Path) -> TaskImport:
        """Create tasks for images (by ``data.sha256``) that have none yet in the project."""
        project = self.ensure_project(images_dir)
        existing = {task.sha256: task.id for task in self._tasks(project.id) if task.sha256}
        new: dict[str, dict] = {}
        for data in tasks:
            sha = data["sha256"]
            if sha not in existing:
                new.setdefault(sha, data)
        client = self._client()
        payloads = [{"data": data} for data in new.values()]
        for start in range(0, len(payloads), IMPORT_CHUNK):
            with self._talking(f"importing {len(payloads)} tasks"):
                client.projects.import_tasks(
                    id=project.id, request=payloads[start:start + IMPORT_CHUNK]
                )
        now = {task.sha256: task.id for task in self._tasks(project.id) if task.sha256}
        wanted = {data["sha256"] for data in tasks}
        return TaskImport(
            created={sha: now[sha] for sha in new},
            existing={sha: task_id for sha, task_id in existing.items() if sha in wanted},
        )

    def update_task_data(self, task_id: int, data: dict) -> None:
        with self._talking(f"updating the data of task {task_id}"):
            self._client().tasks.update(id=str(task_id), data=data)

    # -- annotations ---------------------------------------------------------------------------

    def submit_annotation(
        self, task_id: int, result: list[dict], *, imported: bool = False,
        skipped: bool = False, lead_time: float | None = None,
    ) -> int:
        """Add an annotation to a task (``imported`` marks it as brought in, for review)."""
        extra: dict = {}
        if imported:
            extra["last_action"] = IMPORTED_ACTION
        if lead_time is not None:
            extra["lead_time"] = lead_time
        with self._talking(f"submitting an annotation for task {task_id}"):
            annotation = self._client().annotations.create(
                id=task_id, result=result, was_cancelled=skipped, **extra
            )
        return annotation.id

    def fetch_completed_annotations(self, updated_since: str | None = None) -> list[TaskRef]:
        """Tasks with at least one annotation (changed after ``updated_since`` when given), of
        this project and of the verified test project.

        Cancelled (skipped) annotations are included so the conversion can count them; the
        rules for choosing among annotations are in ``labeling.results``.
        """
        tasks = []
        for project in dict.fromkeys([self, self.for_split("test")]):
            project_id = project.project_id()
            if project_id is not None:
                tasks += [task for task in project._tasks(project_id, updated_since)
                          if task.annotations]
        return tasks

    def latest_annotation_update(self, since: str | None = None) -> AnnotationActivity:
        """How many completed annotations changed after ``since``, and the newest change."""
        after = parse_timestamp(since)
        changed, latest = 0, None
        for task in self.fetch_completed_annotations(updated_since=since):
            for annotation in task.annotations:
                updated = parse_timestamp(annotation.get("updated_at"))
                if annotation.get("was_cancelled") or updated is None:
                    continue
                if after is None or updated > after:
                    changed += 1
                    latest = updated if latest is None else max(latest, updated)
        return AnnotationActivity(changed, None if latest is None else latest.isoformat())

    # -- pre-annotations -----------------------------------------------------------------------

    def add_predictions(self, predictions: Sequence[TaskPrediction], model_version: str) -> int:
        """Attach pre-annotations of ``model_version`` (once per task) and serve the least
        confident tasks first. Returns how many predictions were added."""
        project_id = self.project_id()
        if project_id is None:
            raise LabelStudioError(f"no project {self.project_title!r} at {self.url} yet")
        client = self._client()
        done = {task.id for task in self._tasks(project_id)
                if model_version in task.prediction_versions}
        added = 0
        for prediction in predictions:
            if prediction.task_id in done:
                continue
            with self._talking(f"adding a prediction to task {prediction.task_id}"):
                client.predictions.create(
                    task=prediction.task_id, result=prediction.result, score=prediction.score,
                    model_version=model_version,
                )
            added += 1
        with self._talking("switching the project to the model's pre-annotations"):
            client.projects.update(
                id=project_id, model_version=model_version, sampling=UNCERTAINTY_SAMPLING
            )
        return added

    # -- internals -----------------------------------------------------------------------------

    def _client(self) -> LabelStudio:
        try:
            key = self.api_key or api_token(self.url, CarsdepoHome(path=self.state_path).layout)
        except MissingSecret as missing:
            raise LabelStudioError(str(missing)) from missing
        from label_studio_sdk import LabelStudio

        return LabelStudio(base_url=self.url, api_key=key, timeout=self.timeout_s)

    @contextmanager
    def _talking(self, what: str) -> Iterator[None]:
        """Turn transport and API errors into messages that name the server and the step."""
        from label_studio_sdk.core.api_error import ApiError

        try:
            yield
        except httpx.TransportError as error:
            raise LabelStudioUnavailable(
                f"Label Studio at {self.url} is unreachable while {what}: {error!r}. Is it "
                "running? (`carsdepo labelstudio start`, `carsdepo labelstudio status`)"
            ) from error
        except ApiError as error:
            raise LabelStudioError(
                f"Label Studio at {self.url} refused {what}: HTTP {error.status_code} "
                f"{_api_detail(error.body)}"
            ) from error

    def _find_project(self, client: LabelStudio):
        matches = [p for p in client.projects.list(title=self.project_title)
                   if p.title == self.project_title]
        if not matches:
            return None
        return client.projects.get(id=min(p.id for p in matches))

    def _ensure_storage(self, client: LabelStudio, project_id: int, images_dir: Path) -> int:
        for storage in client.import_storage.local.list(project=project_id):
            if Path(storage.path or "") == images_dir:
                return storage.id
        storage = client.import_storage.local.create(
            project=project_id, path=str(images_dir), title=STORAGE_TITLE,
            regex_filter=NEVER_MATCHES, use_blob_urls=False, recursive_scan=False,
        )
        return storage.id

    def _tasks(self, project_id: int, updated_since: str | None = None) -> list[TaskRef]:
        query = None
        if updated_since is not None:
            query = json.dumps({"filters": {"conjunction": "and", "items": [{
                "filter": "filter:tasks:updated_at", "operator": "greater", "type": "Datetime",
                "value": parse_timestamp(updated_since).astimezone(UTC).strftime(FILTER_TIME),
            }]}})
        with self._talking(f"listing the tasks of project {project_id}"):
            pager = self._client().tasks.list(
                project=project_id, fields="all", page_size=PAGE_SIZE, query=query
            )
            return [
                TaskRef(
                    id=task.id,
                    data=dict(task.data or {}),
                    annotations=[_as_dict(a) for a in task.annotations or []],
                    predictions=tuple(_as_dict(p) for p in task.predictions or []),
                )
                for task in pager
            ]


def _as_dict(annotation) -> dict:
    return annotation if isinstance(annotation, dict) else annotation.model_dump()


def _api_detail(body) -> str:
    if isinstance(body, dict):
        return str(body.get("validation_errors") or body.get("detail") or body)
    return str(body)[:500]


def _normalise_xml(xml: str) -> str:
    return " ".join(xml.split())

