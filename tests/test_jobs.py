"""Every job the web app enqueues by name is an entry point of worker/jobs.py."""

from __future__ import annotations

import pytest
from rq.utils import import_attribute

from webapp import queues


@pytest.mark.parametrize(
    "name",
    [queues.STAGE_JOB, queues.GENERATION_JOB, queues.DELIVER_JOB, queues.DELIVER_ALL_JOB],
)
def test_each_job_the_app_enqueues_by_name_is_a_function_of_worker_jobs(name):
    func = import_attribute(name)

    assert callable(func)
    assert func.__module__ == "worker.jobs"
