"""The HTTP gateway: producers in any language submit, watch and cancel jobs over HTTP.

- :mod:`chordal.gateway.keys`: API keys (stored as digests) and the tenants they name;
- :mod:`chordal.gateway.owners`: which tenant submitted which job;
- :mod:`chordal.gateway.problems`: the one JSON error shape;
- :mod:`chordal.gateway.app`: the FastAPI application;
- :mod:`chordal.gateway.service`: the gateway as a child process of ``chordal dev`` and tests.
"""
