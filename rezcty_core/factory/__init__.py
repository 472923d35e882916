"""The factory: the headless client for ComfyUI's HTTP API, split into the API, graph validation,
batch manifests, the server pool and the command line (`python -m rezcty_core.client ...`).
"""
