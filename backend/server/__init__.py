"""`rscovlm serve`: the model behind a local HTTP service (FastAPI + uvicorn).

app.py      the routes; every body is a model of backend.contract
jobs.py     jobs, the one queue, and the scheduler thread that owns the engine
chat.py     OpenAI chat completions <-> conversations
uploads.py  rasters sent as request bodies
security.py bearer token, Host check, body limits, the server file the plugin reads
serving.py  binding and running uvicorn, stopping the queue first
"""
