"""Test doubles shared across test packages.

Only the LLM is faked (``tests.fakes.llm``): the receiver, the bridge, Rasa and the action
server in these tests are the real programs. Import the fixtures into a conftest::

    from tests.fakes.llm import fake_llm, fake_llm_server  # noqa: F401
"""
