"""Where measurements come from in users' code: framework callbacks, ASGI middleware, ranks.

Each module imports its framework lazily and depends on ``meter``'s public API only:

* `integrations.lightning`: ``EnergyCallback`` for Lightning's ``Trainer``;
* `integrations.transformers`: ``EnergyCallback`` for Hugging Face's ``Trainer``;
* `integrations.asgi`: ``EnergyMiddleware`` for any ASGI app (FastAPI, Starlette, vLLM);
* `integrations.distributed`: rank-aware device selection and a gather of run totals.
"""
