"""The local web app (optional extra ``web``): the kiosk display at ``/`` and the administration
pages at ``/admin``, served by ``edge-verify serve`` in the process that runs the kiosk loop.

Nothing in the device core imports this package: it needs fastapi, uvicorn, jinja2 and
python-multipart (``pip install 'edge-verify[web]'``)."""
