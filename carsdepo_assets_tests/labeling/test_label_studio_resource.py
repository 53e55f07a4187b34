"""``LabelStudioResource`` against the real server: project, tasks, images, errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
from label_studio_sdk import LabelStudio

from carsdepo_assets.images.store import ImageStore
from carsdepo_assets.labeling.config import labeling_config
from carsdepo_assets.labeling.tasks import batch_task_data
from carsdepo_assets.resources.label_studio import LabelStudioResource, LabelStudioUnavailable
from carsdepo_assets.state import StateLayout
from carsdepo_assets_tests.fixtures.label_studio import LabelStudioServer, free_port
from carsdepo_assets_tests.labeling.batches import synthetic_batch


def sdk(label_studio_server: LabelStudioServer) -> LabelStudio:
    return LabelStudio(base_url=label_studio_server.url, api_key=label_studio_server.token)


@pytest.mark.label_studio
def test_project_bootstrap_is_idempotent(
    label_studio: LabelStudioResource, label_studio_server: LabelStudioServer,
    carsdepo_home: StateLayout,
):
    first = label_studio.ensure_project(carsdepo_home.images)
    second = label_studio.ensure_project(carsdepo_home.images)

    assert first.created and not second.created
    assert (second.id, second.storage_id) == (first.id, first.storage_id)
    client = sdk(label_studio_server)
    same_title = [p for p in client.projects.list(title=label_studio.project_title)
                  if p.title == label_studio.project_title]
    assert len(same_title) == 1
    assert client.projects.get(id=first.id).label_config.strip() == labeling_config().strip()
    assert len(list(client.import_storage.local.list(project=first.id))) == 1


@pytest.mark.label_studio
def test_importing_a_batch_twice_creates_each_image_task_once(
    label_studio: LabelStudioResource, carsdepo_home: StateLayout, tmp_path: Path
):
    manifest, _ = synthetic_batch(carsdepo_home, tmp_path / "synth", "b1", duplicate=True)
    tasks = batch_task_data(manifest, carsdepo_home.images,
                            label_studio.document_root(carsdepo_home.images))

    first = label_studio.import_tasks(tasks, carsdepo_home.images)
    second = label_studio.import_tasks(tasks + tasks, carsdepo_home.images)

    assert sorted(first.created) == sorted(manifest.image_hashes())  # 5 files, 4 images
    assert second.created == {} and second.existing == first.created
    listed = label_studio.list_tasks()
    assert sorted(task.sha256 for task in listed) == sorted(manifest.image_hashes())


@pytest.mark.label_studio
def test_a_tasks_image_url_serves_the_stored_bytes_to_a_logged_in_annotator(
    label_studio: LabelStudioResource, label_studio_server: LabelStudioServer,
    carsdepo_home: StateLayout, tmp_path: Path,
):
    """What the browser does: log in with the form, then fetch the task's image URL."""
    manifest, _ = synthetic_batch(carsdepo_home, tmp_path / "synth", "b1", n_images=1)
    tasks = batch_task_data(manifest, carsdepo_home.images,
                            label_studio.document_root(carsdepo_home.images))
    label_studio.import_tasks(tasks, carsdepo_home.images)
    (task,) = label_studio.list_tasks()
    image_url = label_studio_server.url + task.data["image"]
    stored = ImageStore(carsdepo_home.images).path_for(task.sha256).read_bytes()

    browser = requests.Session()
    login = f"{label_studio_server.url}/user/login/"
    form = browser.get(login, timeout=30).text
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    answer = browser.post(login, timeout=30, allow_redirects=False, headers={"Referer": login},
                          data={"email": label_studio_server.username,
                                "password": label_studio_server.password,
                                "csrfmiddlewaretoken": csrf})
    assert answer.status_code == 302, "the admin user could not log in"
    served = browser.get(image_url, timeout=30)
    assert served.status_code == 200 and served.headers["content-type"] == "image/jpeg"
    assert served.content == stored

    assert requests.get(image_url, timeout=30).status_code in (401, 403)  # not logged in


def test_an_unreachable_server_gives_an_error_naming_its_url(carsdepo_home: StateLayout):
    url = f"http://127.0.0.1:{free_port()}"
    resource = LabelStudioResource(url=url, api_key="carsdepo-test-token")
    with pytest.raises(LabelStudioUnavailable, match=f"Label Studio at {url} is unreachable"):
        resource.ensure_project(carsdepo_home.images)
