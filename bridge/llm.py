"""The LLM boundary: one OpenAI-compatible client per bridge.

Any server speaking ``POST {base_url}/chat/completions`` works (OpenAI, vLLM, Ollama, llama.cpp,
LM Studio …). Base URL, model and key come from :class:`~bridge.settings.BridgeSettings`.
"""

from __future__ import annotations

import logging

import openai

from bridge.settings import BridgeSettings

log = logging.getLogger("bridge.llm")

# Local OpenAI-compatible servers usually need no key, but the openai client refuses to start
# without one. The placeholder is only ever sent to the configured base URL.
_NO_KEY = "not-set"


class LLMError(Exception):
    """The model could not produce an answer (transport error, HTTP error, empty choice)."""


class LLM:
    def __init__(self, settings: BridgeSettings) -> None:
        self._model = settings.llm_model
        key = settings.llm_api_key.get_secret_value()
        if not key and not settings.llm_base_url:
            log.warning(
                "no OPENAI_API_KEY / BRIDGE_LLM_API_KEY set and no BRIDGE_LLM_BASE_URL: "
                "replies will fail until one is configured"
            )
        kwargs: dict[str, object] = {
            "api_key": key or _NO_KEY,
            "timeout": settings.llm_timeout_s,
            "max_retries": settings.llm_max_retries,
        }
        if settings.llm_base_url:
            kwargs["base_url"] = settings.llm_base_url
        self._client = openai.AsyncOpenAI(**kwargs)  # type: ignore[arg-type]

    @property
    def model(self) -> str:
        return self._model

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        temperature: float,
        max_tokens: int,
    ) -> str:
        """One chat completion; raises :class:`LLMError` with a short reason on any failure."""
        try:
            resp = await self._client.chat.completions.create(
                model=self._model,
                temperature=temperature,
                max_tokens=max_tokens,
                messages=messages,  # type: ignore[arg-type]
            )
        except openai.APIStatusError as exc:
            raise LLMError(f"LLM endpoint answered HTTP {exc.status_code}") from exc
        except openai.APITimeoutError as exc:
            raise LLMError("LLM endpoint timed out") from exc
        except openai.APIConnectionError as exc:
            raise LLMError("LLM endpoint unreachable") from exc
        except openai.OpenAIError as exc:
            raise LLMError(f"LLM client error: {type(exc).__name__}") from exc
        if not resp.choices:
            raise LLMError("LLM returned no choices")
        return (resp.choices[0].message.content or "").strip()

    async def summarise(self, prompt: str) -> str:
        """SDK contract for ``AsyncSessionSummarizer``: ``async (prompt) -> str``.

        Errors propagate on purpose: the summarizer then restores the session's history and
        retries on the next threshold, instead of storing an empty summary.
        """
        return await self.complete(
            [{"role": "user", "content": prompt}], temperature=0.2, max_tokens=300
        )

    async def aclose(self) -> None:
        await self._client.close()
