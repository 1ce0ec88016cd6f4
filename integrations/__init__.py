"""Where measurements come from in users' code: framework callbacks, ASGI middleware, ranks.

Each module imports its framework lazily and depends on ``meter``'s public API only:

* `meter.integrations.lightning`: ``EnergyCallback`` for Lightning's ``Trainer``;
* `meter.integrations.transformers`: ``EnergyCallback`` for Hugging Face's ``Trainer``;
* `meter.integrations.asgi`: ``EnergyMiddleware`` for any ASGI app (FastAPI, Starlette, vLLM);
* `meter.integrations.distributed`: rank-aware device selection and a gather of run totals.
"""
