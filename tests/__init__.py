import pytest

# Plain asserts in the shared helpers explain their failures as a test's own asserts do.
pytest.register_assert_rewrite("tests.support", "tests.e2e.support")
