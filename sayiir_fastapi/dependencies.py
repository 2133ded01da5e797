"""``get_client`` and ``WorkflowClientDep``: the client of the running ``Sayiir`` in endpoints.

``get_client`` is one module-level function, so a test can replace it for the whole app::

    app.dependency_overrides[get_client] = lambda: AsyncWorkflowClient(InMemoryBackend())
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from sayiir_core import AsyncWorkflowClient

if TYPE_CHECKING:
    from sayiir_fastapi.integration import Sayiir


def running_sayiir(request: Request) -> Sayiir:
    """The ``Sayiir`` whose lifespan runs the app serving ``request``."""
    sayiir: Sayiir | None = getattr(request.app.state, "sayiir", None)
    if sayiir is None:
        raise RuntimeError(
            "no running Sayiir on this app: create the app with "
            "FastAPI(lifespan=sayiir.lifespan), or enter sayiir.lifespan(app) from its lifespan"
        )
    return sayiir


async def get_client(request: Request) -> AsyncWorkflowClient:
    """The ``AsyncWorkflowClient`` of the app's running ``Sayiir`` (opened by its lifespan)."""
    # async: FastAPI calls a plain function dependency in its thread pool, a thread
    # round trip per request for an attribute read.
    return running_sayiir(request).client


WorkflowClientDep = Annotated[AsyncWorkflowClient, Depends(get_client)]
"""An endpoint parameter typed ``WorkflowClientDep`` receives the running client."""
