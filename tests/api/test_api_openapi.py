"""/openapi.json describes the API as it answers (issue 13, first part): every path parameter
declared, the auth header, Cinder's fault bodies, no 422 that the API never sends."""

import re

import httpx


def test_every_operation_declares_its_path_parameters_the_auth_header_and_the_faults(api_url):
    document = httpx.get(f"{api_url}/openapi.json", timeout=30).json()
    assert document["components"]["securitySchemes"]["APIKeyHeader"] == {
        "type": "apiKey", "in": "header", "name": "X-Auth-Token",
        "description": "A token from `volchain token issue`, or `user:project` in noauth mode."}
    operations = [(path, method, op) for path, ops in document["paths"].items() for method, op in ops.items()]
    assert len(operations) >= 50
    for path, method, op in operations:
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{(\w+)}", path)), (method, path, declared)
        assert "422" not in op["responses"], (method, path)
        for status in ("400", "401", "403", "404", "413", "503"):
            schema = op["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Fault"}, (method, path, status)
        if path.startswith("/v3/{project_id}/") and path != "/v3/{project_id}/":  # version discovery: no token
            assert op.get("security") == [{"APIKeyHeader": []}], (method, path)
