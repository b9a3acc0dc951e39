"""A whole `ferry deploy` twice, offline: Pub/Sub on the emulator, Cloud Scheduler on the local gRPC
fake, gcloud and the Firestore admin API through injected fakes. The second run changes nothing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from google.cloud import pubsub_v1

from fakes.firestore_admin import FakeFirestoreAdmin
from fakes.gcloud import FakeGcloud
from fakes.sample_infra import SAMPLE, SAMPLE_WEB
from fakes.scheduler import serve
from ferry.deploy import Applier, deploy
from ferry.infra.model import Infra

pytestmark = pytest.mark.emulator
R = "europe-west1"


@pytest.mark.parametrize("doc", [SAMPLE, SAMPLE_WEB], ids=["sample", "with-iap"])
def test_deploy_twice(emulators, project_id: str, tmp_path: Path, doc: dict) -> None:  # type: ignore[no-untyped-def,type-arg]
    """From an empty project (no database, no APIs, no accounts): everything in order, then nothing."""
    infra = Infra.model_validate(doc)
    gcloud, admin = FakeGcloud(project_number="4242"), FakeFirestoreAdmin()
    pub, sub = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    with serve() as (scheduler, sched_client):
        def applier() -> Applier:
            return Applier(runner=gcloud, publisher=pub, subscriber=sub, scheduler=sched_client,
                           firestore_admin=admin)

        first = deploy(infra, project_id, R, tmp_path, applier())
        assert Counter(o.action for o in first)["unchanged"] == 0
        writes = len(gcloud.writes())

        # the push subscription and the job target the URL gcloud reported for the deployed function
        push = sub.get_subscription(request={"subscription": f"projects/{project_id}/subscriptions/events-deliver"})
        assert push.push_config.push_endpoint == "https://deliver-x7k2q-ew.a.run.app"
        (job,) = scheduler.jobs.values()
        assert job.http_target.uri == "https://tick-x7k2q-ew.a.run.app/tick"
        # the Pub/Sub service agent of *this* project number got the dead-letter grants
        agent = "serviceAccount:service-4242@gcp-sa-pubsub.iam.gserviceaccount.com"
        assert gcloud.policies[("pubsub topics", "ferry-dead-letter")] == [
            {"role": "roles/pubsub.publisher", "members": [agent]}]

        # the database came first, in native mode
        db = admin.databases[f"projects/{project_id}/databases/(default)"]
        assert db.type_.name == "FIRESTORE_NATIVE"
        assert admin.created[0].endswith("/databases/(default)")
        if infra.web.domain:  # the api verifies IAP's header for the backend service that fronts it
            backend = gcloud.compute[("backend-services", "ferry-api-web")]
            assert backend["flags"]["iap"] == "enabled"
            api_env = gcloud.functions["api"]["flags"]["set-env-vars"]
            assert f"FERRY_IAP_AUDIENCE=/projects/4242/global/backendServices/{backend['id']}" in api_env
            assert gcloud.policies[("iap-web", "ferry-api-web")] == [
                {"role": "roles/iap.httpsResourceAccessor", "members": ["group:ferry-users@example.com"]}]

        second = deploy(infra, project_id, R, tmp_path, applier())
        assert [o.action for o in second] == ["unchanged"] * len(second)
        assert len(second) == len(first)
        assert len(gcloud.writes()) == writes
    sub.close()
