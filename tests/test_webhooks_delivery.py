"""Webhook delivery end to end: real workers, real HTTP receivers, signatures checked with
`standardwebhooks` the way an integrator's receiver checks them."""

from __future__ import annotations

import itertools
import socket
import statistics
import time
from datetime import timedelta

import pytest
import redis
from standardwebhooks import Webhook

from tests.support import (
    ASSESSMENT_EVENTS,
    add_endpoint,
    deliveries_of,
    full_answers,
    wait_for_delivery,
)
from tests.webhook_receiver import Answer

pytestmark = pytest.mark.db


def submit_assessment(client, *, answered: bool = True) -> tuple[dict, dict]:
    """A student's assessment submitted through the site; returns (assessment, submit body)."""
    assessment = client.post("/api/v1/assessments", json={"question_set": "python-basics"})
    assessment = assessment.get_json()
    responses = full_answers(assessment) if answered else []
    submitted = client.post(
        f"/api/v1/assessments/{assessment['id']}/submit", json={"responses": responses}
    )
    assert submitted.status_code == 202, submitted.get_json()
    return assessment, submitted.get_json()


def test_full_assessment_sends_each_event_once_in_sequence_order(webhook_site, receivers, tokens):
    receiver = receivers()
    site = webhook_site()
    admin, student = site.client(tokens["admin"]), site.client(tokens["student"])
    endpoint = add_endpoint(admin, receiver.url, description="everything")

    assessment, submitted = submit_assessment(student)
    receiver.wait_for(len(ASSESSMENT_EVENTS))
    time.sleep(1.5)  # anything extra (a duplicate milestone, say) would arrive by now

    payloads = receiver.verified(endpoint["secret"])
    assert len(payloads) == len(ASSESSMENT_EVENTS)
    ordered = sorted(payloads, key=lambda p: p["data"]["sequence"])
    assert [p["type"] for p in ordered] == ASSESSMENT_EVENTS
    assert [p["data"]["sequence"] for p in ordered] == list(range(1, len(ASSESSMENT_EVENTS) + 1))
    operation_id = submitted["operation"]["id"]
    for payload in ordered:
        assert set(payload) == {"type", "timestamp", "data"}
        assert payload["data"]["assessment_id"] == assessment["id"]
        assert payload["data"]["operation_id"] == operation_id
    assert ordered[0]["data"]["status"] == "submitted"
    assert ordered[1]["data"]["status"] == "processing"
    progress = [p["data"] for p in ordered if p["type"] == "assessment.progress"]
    assert [p["milestone"] for p in progress] == [25, 50, 75]
    assert all(p["overall_progress"] >= p["milestone"] for p in progress)
    completed = ordered[-1]["data"]
    result = student.get(f"/api/v1/assessments/{assessment['id']}/result").get_json()
    assert completed["status"] == "completed" and completed["overall_progress"] == 100
    assert completed["result"]["total"] == result["total"]
    assert completed["result"]["percentage"] == result["percentage"]
    assert len({r.webhook_id for r in receiver.received}) == len(ASSESSMENT_EVENTS)


def test_a_rescore_sends_a_start_and_the_new_result_but_no_second_submitted(
    webhook_site, receivers, tokens
):
    receiver = receivers()
    site = webhook_site()
    admin, student = site.client(tokens["admin"]), site.client(tokens["student"])
    endpoint = add_endpoint(admin, receiver.url)
    assessment, submitted = submit_assessment(student)
    receiver.wait_for(len(ASSESSMENT_EVENTS))

    rescore = admin.post(f"/api/v1/assessments/{assessment['id']}/rescore")
    assert rescore.status_code == 202, rescore.get_json()
    rescored = ASSESSMENT_EVENTS[1:]  # everything but assessment.submitted
    receiver.wait_for(len(ASSESSMENT_EVENTS) + len(rescored))
    time.sleep(1.5)  # anything extra (a second assessment.submitted, say) would arrive by now

    payloads = sorted(receiver.verified(endpoint["secret"]), key=lambda p: p["data"]["sequence"])
    first, second = payloads[: len(ASSESSMENT_EVENTS)], payloads[len(ASSESSMENT_EVENTS) :]
    assert [p["type"] for p in first] == ASSESSMENT_EVENTS
    assert [p["type"] for p in second] == rescored
    new_operation = rescore.get_json()["id"]
    assert new_operation != submitted["operation"]["id"]
    assert {p["data"]["operation_id"] for p in second} == {new_operation}
    assert second[0]["data"]["status"] == "processing"
    completed = second[-1]["data"]
    result = student.get(f"/api/v1/assessments/{assessment['id']}/result").get_json()
    assert completed["status"] == "completed"
    assert completed["result"]["total"] == result["total"]


def test_500_500_200_is_three_attempts_with_one_webhook_id(webhook_site, receivers, tokens):
    receiver = receivers(Answer(500, "boom"), Answer(500, "boom again"), Answer(200, "thanks"))
    site = webhook_site()
    admin = site.client(tokens["admin"])
    endpoint = add_endpoint(admin, receiver.url, event_types=["assessment.submitted"])

    submit_assessment(site.client(tokens["student"]), answered=False)
    [summary] = deliveries_of(admin, endpoint["id"])
    delivery = wait_for_delivery(admin, summary["id"], {"succeeded", "failed"})

    assert delivery["status"] == "succeeded"
    attempts = delivery["attempts"]
    assert [a["number"] for a in attempts] == [1, 2, 3]
    assert [a["response_status"] for a in attempts] == [500, 500, 200]
    assert [a["response_body"] for a in attempts] == ["boom", "boom again", "thanks"]
    assert {a["trigger"] for a in attempts} == {"scheduled"}
    assert (
        all(a["next_attempt_at"] for a in attempts[:2]) and attempts[2]["next_attempt_at"] is None
    )
    assert all(a["url"] == receiver.url and a["duration_ms"] >= 0 for a in attempts)
    logged = attempts[0]["request_headers"]
    assert logged["webhook-id"] == delivery["webhook_id"]
    assert logged["webhook-signature"] == "v1,[redacted]"

    received = receiver.wait_for(3)
    assert {r.webhook_id for r in received} == {delivery["webhook_id"]}
    assert len({r.body for r in received}) == 1, "the same bytes on every attempt"
    receiver.verified(endpoint["secret"])
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(received)]
    assert all(0.7 <= gap < 5 for gap in gaps), gaps  # the 1 s schedule, +-20% jitter


def test_a_redirect_is_a_failure_and_is_not_followed(webhook_site, receivers, tokens):
    target = receivers()
    receiver = receivers(default=Answer(302, "", headers={"Location": target.url}))
    site = webhook_site(WEBHOOK_RETRY_SCHEDULE="1")
    admin = site.client(tokens["admin"])
    endpoint = add_endpoint(admin, receiver.url, event_types=["assessment.submitted"])

    submit_assessment(site.client(tokens["student"]), answered=False)
    [summary] = deliveries_of(admin, endpoint["id"])
    delivery = wait_for_delivery(admin, summary["id"], {"succeeded", "failed"})

    assert delivery["status"] == "failed"
    assert [a["response_status"] for a in delivery["attempts"]] == [302, 302]
    assert {a["error"] for a in delivery["attempts"]} == {"redirect"}
    assert target.received == [], "the redirect target must never be called"


def test_410_gone_disables_the_endpoint_and_recover_sends_what_it_missed(
    webhook_site, receivers, tokens
):
    receiver = receivers(Answer(410, "gone"))
    site = webhook_site()
    admin, student = site.client(tokens["admin"]), site.client(tokens["student"])
    endpoint = add_endpoint(admin, receiver.url, event_types=["assessment.submitted"])

    submit_assessment(student, answered=False)
    [first] = deliveries_of(admin, endpoint["id"])
    first = wait_for_delivery(admin, first["id"], {"succeeded", "failed"})
    assert first["status"] == "failed" and len(first["attempts"]) == 1, "no retries after 410"
    shown = admin.get(f"/api/v1/webhook-endpoints/{endpoint['id']}").get_json()
    assert shown["enabled"] is False
    assert "410" in shown["disabled_reason"]

    submit_assessment(student, answered=False)  # happens while disabled: kept, not sent
    newest = deliveries_of(admin, endpoint["id"])[0]
    assert newest["status"] == "skipped"
    refused = admin.post(
        f"/api/v1/webhook-endpoints/{endpoint['id']}/recover", json={"since": first["created_at"]}
    )
    assert refused.status_code == 409
    assert refused.get_json()["code"] == "WEBHOOK_ENDPOINT_DISABLED"

    enabled = admin.patch(f"/api/v1/webhook-endpoints/{endpoint['id']}", json={"enabled": True})
    assert enabled.get_json()["enabled"] is True and enabled.get_json()["disabled_reason"] is None
    recovered = admin.post(
        f"/api/v1/webhook-endpoints/{endpoint['id']}/recover", json={"since": first["created_at"]}
    )
    assert recovered.status_code == 202
    assert recovered.get_json()["recovered"] == 2
    for delivery_id in recovered.get_json()["delivery_ids"]:
        done = wait_for_delivery(admin, delivery_id, {"succeeded", "failed"})
        assert done["status"] == "succeeded"
        assert done["attempts"][-1]["trigger"] == "manual"
    received = receiver.wait_for(3)
    assert received[0].webhook_id == received[1].webhook_id == first["webhook_id"]
    receiver.verified(endpoint["secret"])


def test_sustained_failure_disables_the_endpoint_with_a_reason(webhook_site, receivers, tokens):
    receiver = receivers(default=Answer(503, "down for maintenance"))
    site = webhook_site(WEBHOOK_DISABLE_AFTER="2")
    admin = site.client(tokens["admin"])
    endpoint = add_endpoint(admin, receiver.url, event_types=["assessment.submitted"])

    submit_assessment(site.client(tokens["student"]), answered=False)
    [summary] = deliveries_of(admin, endpoint["id"])
    delivery = wait_for_delivery(admin, summary["id"], {"failed"})

    shown = admin.get(f"/api/v1/webhook-endpoints/{endpoint['id']}").get_json()
    assert shown["enabled"] is False
    assert "failed for 2 seconds" in shown["disabled_reason"]
    assert "HTTP 503" in shown["disabled_reason"]
    assert 2 <= len(delivery["attempts"]) <= 4


def test_retry_after_is_honoured(webhook_site, receivers, tokens):
    receiver = receivers(Answer(429, "slow down", headers={"Retry-After": "3"}), Answer(200))
    site = webhook_site()
    admin = site.client(tokens["admin"])
    endpoint = add_endpoint(admin, receiver.url, event_types=["assessment.submitted"])

    submit_assessment(site.client(tokens["student"]), answered=False)
    [summary] = deliveries_of(admin, endpoint["id"])
    delivery = wait_for_delivery(admin, summary["id"], {"succeeded", "failed"})

    assert [a["response_status"] for a in delivery["attempts"]] == [429, 200]
    first, second = receiver.wait_for(2)
    assert second.at - first.at >= 2.9  # 3 s asked for, where the schedule says about 1 s


def test_a_hanging_receiver_does_not_delay_a_healthy_one(webhook_site, receivers, tokens):
    hanging = receivers(default=Answer(200, delay=3))  # answers after the 1 s timeout
    healthy = receivers()
    site = webhook_site(workers=2)
    admin = site.client(tokens["admin"])
    slow = add_endpoint(admin, hanging.url)
    fast = add_endpoint(admin, healthy.url)

    latencies = []
    for round_number in range(1, 4):
        admin.post(f"/api/v1/webhook-endpoints/{slow['id']}/test")
        sent = time.monotonic()
        admin.post(f"/api/v1/webhook-endpoints/{fast['id']}/test")
        latencies.append(healthy.wait_for(round_number)[-1].at - sent)
        hanging.wait_for(round_number)
        [stuck] = deliveries_of(admin, slow["id"])[:1]
        stuck = wait_for_delivery(admin, stuck["id"], {"failed"})
        assert stuck["attempts"][0]["error"] == "timeout"
        assert stuck["attempts"][0]["duration_ms"] >= 1000

    print(f"healthy delivery latency beside a hanging receiver: {latencies}")
    assert max(latencies) < 0.5, latencies  # while the hanging attempt takes the full 1 s
    assert statistics.median(latencies) < 0.3, latencies


def test_rotation_signs_with_both_secrets_for_the_grace_period(webhook_site, receivers, tokens):
    receiver = receivers()
    site = webhook_site()
    admin = site.client(tokens["admin"])
    endpoint = add_endpoint(admin, receiver.url)
    rotated = admin.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/rotate-secret").get_json()
    assert rotated["secret"] != endpoint["secret"] and rotated["secret"].startswith("whsec_")
    assert rotated["previous_secret_expires_at"]

    admin.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/test")
    [request] = receiver.wait_for(1)
    signatures = request.signatures
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    for secret, signature in zip((rotated["secret"], endpoint["secret"]), signatures, strict=True):
        alone = {**request.headers, "webhook-signature": signature}
        assert Webhook(secret).verify(request.body, alone)["type"] == "webhook.test"
    other = {**request.headers, "webhook-signature": signatures[1]}
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(rotated["secret"]).verify(request.body, other)


def test_redeliver_sends_the_same_message_again(webhook_site, receivers, tokens):
    receiver = receivers()
    site = webhook_site()
    admin = site.client(tokens["admin"])
    endpoint = add_endpoint(admin, receiver.url)
    sent = admin.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/test")
    assert sent.status_code == 202
    assert sent.headers["Location"] == f"/api/v1/webhook-deliveries/{sent.get_json()['id']}"
    first = wait_for_delivery(admin, sent.get_json()["id"], {"succeeded"})

    again = admin.post(f"/api/v1/webhook-deliveries/{first['id']}/redeliver")
    assert again.status_code == 202
    receiver.wait_for(2)
    second = wait_for_delivery(admin, first["id"], {"succeeded"})
    assert [a["trigger"] for a in second["attempts"]] == ["manual", "manual"]
    one, two = receiver.received
    assert one.webhook_id == two.webhook_id == first["webhook_id"]
    assert one.body == two.body
    receiver.verified(endpoint["secret"])
    audit = admin.get("/api/v1/audit", query_string={"action": "webhook_delivery.redelivered"})
    assert audit.get_json()["entries"][0]["entity_id"] == str(first["id"])


def test_assessment_callback_is_signed_with_the_owners_secret(webhook_site, receivers, tokens):
    receiver = receivers()
    site = webhook_site()
    student = site.client(tokens["student"])
    assessment = student.post("/api/v1/assessments", json={"question_set": "python-basics"})
    assessment = assessment.get_json()
    registered = student.post(
        f"/api/v1/assessments/{assessment['id']}/webhook", json={"webhook_url": receiver.url}
    )
    assert registered.status_code == 201, registered.get_json()
    body = registered.get_json()
    assert body["assessment_id"] == assessment["id"] and body["webhook_url"] == receiver.url
    assert body["signing_secret"].startswith("whsec_") and body["registered_at"]

    student.post(
        f"/api/v1/assessments/{assessment['id']}/submit",
        json={"responses": full_answers(assessment)},
    )
    receiver.wait_for(len(ASSESSMENT_EVENTS))
    payloads = receiver.verified(body["signing_secret"])
    ordered = sorted(payloads, key=lambda p: p["data"]["sequence"])
    assert [p["type"] for p in ordered] == ASSESSMENT_EVENTS


def test_a_name_resolving_to_a_private_address_at_send_time_is_refused(
    webhook_site, receivers, tokens, app
):
    """The row says `localhost`, as if it had resolved publicly when registered; the worker
    (no allow-list) resolves it again before connecting and refuses."""
    from webapp.extensions import db
    from webapp.models import WebhookEndpoint

    receiver = receivers()
    site = webhook_site(WEBHOOK_ALLOWED_CIDRS="")
    port = receiver.url.split(":")[2].split("/")[0]
    with app.app_context():
        endpoint = WebhookEndpoint(url=f"http://localhost:{port}/hook", event_types=[])
        db.session.add(endpoint)
        db.session.commit()
        endpoint_id = endpoint.id
    admin = site.client(tokens["admin"])
    sent = admin.post(f"/api/v1/webhook-endpoints/{endpoint_id}/test").get_json()
    delivery = wait_for_delivery(admin, sent["id"], {"failed", "succeeded"})

    assert delivery["status"] == "failed"
    [attempt] = delivery["attempts"]
    assert attempt["error"] == "blocked" and "loopback" in attempt["error_detail"]
    assert attempt["response_status"] is None
    assert receiver.received == []


def test_deliveries_wait_in_the_database_while_redis_is_down(
    webhook_site, receivers, tokens, db_url, app
):
    from webapp import create_app
    from webapp.services.webhooks.recovery import pending_deliveries_without_job, requeue_lost

    receiver = receivers()
    site = webhook_site()
    endpoint = add_endpoint(site.client(tokens["admin"]), receiver.url)
    offline = create_app(
        {
            **{k: v for k, v in site.app.config.items() if k.startswith(("RATE_", "WEBHOOK_"))},
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": db_url,
            "REDIS_URL": "redis://127.0.0.1:1/0",  # nothing listens there
        }
    )
    with offline.test_client() as client:
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {tokens['admin']}"
        sent = client.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/test")
    assert sent.status_code == 202
    assert sent.get_json()["status"] == "pending"
    time.sleep(1.5)
    assert receiver.received == []

    with site.app.app_context():
        lost = pending_deliveries_without_job(grace=timedelta(0))
        assert [d.id for d in lost] == [sent.get_json()["id"]]
        assert requeue_lost(grace=timedelta(0)) == 1
    admin = site.client(tokens["admin"])
    done = wait_for_delivery(admin, sent.get_json()["id"], {"succeeded"})
    assert done["webhook_id"] == receiver.wait_for(1)[0].webhook_id


def test_a_receiver_down_for_its_first_three_attempts_then_up_gets_the_delivery(
    webhook_site, receivers, tokens
):
    with socket.socket() as probe:  # a port with nothing listening: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    site = webhook_site(WEBHOOK_RETRY_SCHEDULE="1,1,1,3,3")
    admin = site.client(tokens["admin"])
    url = f"http://127.0.0.1:{port}/hook"
    endpoint = add_endpoint(admin, url, event_types=["assessment.submitted"])
    submit_assessment(site.client(tokens["student"]), answered=False)
    [summary] = deliveries_of(admin, endpoint["id"])

    deadline = time.monotonic() + 30
    while len(admin.get(f"/api/v1/webhook-deliveries/{summary['id']}").get_json()["attempts"]) < 3:
        assert time.monotonic() < deadline, "three attempts were not made"
        time.sleep(0.05)
    receiver = receivers(port=port)  # the receiver comes back up before the fourth attempt

    delivery = wait_for_delivery(admin, summary["id"], {"succeeded", "failed"})
    assert delivery["status"] == "succeeded"
    attempts = delivery["attempts"]
    assert [a["number"] for a in attempts] == [1, 2, 3, 4]
    assert [a["response_status"] for a in attempts] == [None, None, None, 200]
    assert all(a["error"] for a in attempts[:3]) and attempts[3]["error"] is None
    [received] = receiver.wait_for(1)
    assert received.webhook_id == delivery["webhook_id"]
    receiver.verified(endpoint["secret"])


def test_a_delivery_popped_by_a_worker_that_died_before_starting_it_is_found_lost(
    webhook_site, receivers, tokens, db_url, idle_redis_url
):
    """A worker takes the delivery's job off the queue (BLPOP) and is killed before it marks it
    started: the job says "queued" but is on no queue, so the watchdog sends it again."""
    from webapp import create_app
    from webapp.extensions import db
    from webapp.models import Delivery
    from webapp.services.webhooks.recovery import pending_deliveries_without_job

    receiver = receivers()
    site = webhook_site()
    endpoint = add_endpoint(site.client(tokens["admin"]), receiver.url)
    url = idle_redis_url  # no worker listens here
    redis.Redis.from_url(url).flushdb()
    idle = create_app(
        {
            **{k: v for k, v in site.app.config.items() if k.startswith(("RATE_", "WEBHOOK_"))},
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": db_url,
            "REDIS_URL": url,
        }
    )
    client = idle.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {tokens['admin']}"
    sent = client.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/test").get_json()
    with idle.app_context():
        job_id = db.session.get(Delivery, sent["id"]).job_id
        assert pending_deliveries_without_job(grace=timedelta(0)) == []  # queued: alive
        assert redis.Redis.from_url(url).lrem("rq:queue:webhooks", 0, job_id) == 1  # BLPOP
        lost = pending_deliveries_without_job(grace=timedelta(0))
    assert [d.id for d in lost] == [sent["id"]]
