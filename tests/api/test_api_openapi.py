"""/openapi.json describes the API as it answers (issue 13): every path parameter declared, the
auth and microversion headers, the request bodies from the schemas the routes validate with, each
operation's own answers with Cinder's fault bodies, and no 422 of FastAPI's that the API never sends."""

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
        assert op["responses"].get("422", {}).get("description") != "Validation Error", (method, path)  # FastAPI's
        statuses = ("400", "401", "404", "406", "413", "503") if op.get("security") else ("400", "413")
        for status in statuses:
            schema = op["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Fault"}, (method, path, status)
        if path.startswith("/v3/{project_id}/") and path != "/v3/{project_id}/":  # version discovery: no token
            assert op.get("security") == [{"APIKeyHeader": []}], (method, path)


def _operations(api_url):
    document = httpx.get(f"{api_url}/openapi.json", timeout=30).json()
    return {(method.upper(), path): op for path, ops in document["paths"].items() for method, op in ops.items()}


def test_every_body_the_api_reads_is_described_by_the_schema_it_is_validated_with(api_url):
    from api.routers.volume_metadata import METADATA_BODY, UPDATE_BODY
    from api.schemas import CREATE_VOLUME_DOCUMENTED, QUOTA_SET, VOLUME_TYPE_CREATE

    operations = _operations(api_url)
    takes_a_body = {key for key in operations if key[0] in ("POST", "PUT")} - {
        ("PUT", "/v3/{project_id}/os-services/{action}")}  # no action there takes a body: all are refused
    for key in takes_a_body:
        body = operations[key].get("requestBody")
        assert body and body["required"] and body["content"]["application/json"]["schema"]["type"] == "object", key
    prefix = "/v3/{project_id}"
    for (method, path), schema in {("POST", "/volumes"): CREATE_VOLUME_DOCUMENTED, ("PUT", "/volumes/{volume_id}"):
                                   UPDATE_BODY, ("PUT", "/volumes/{volume_id}/metadata"): METADATA_BODY,
                                   ("POST", "/types"): VOLUME_TYPE_CREATE, ("PUT", "/os-quota-sets/{target}"): QUOTA_SET}.items():
        documented = operations[(method, prefix + path)]["requestBody"]["content"]["application/json"]["schema"]
        assert documented == schema, (method, path)
    assert set(CREATE_VOLUME_DOCUMENTED["properties"]["volume"]["properties"]) >= {"size", "volume_type", "backup_id"}


def test_each_operation_declares_its_own_answers_and_the_microversion_header(api_url):
    operations = _operations(api_url)
    prefix = "/v3/{project_id}"
    create = operations[("POST", prefix + "/volumes")]["responses"]
    assert {"202", "403", "409", "413", "422"} <= set(create)
    assert "403" not in operations[("GET", prefix + "/volumes/{volume_id}")]["responses"]  # any role may read
    for admin_only in [("PUT", "/os-quota-sets/{target}"), ("GET", "/os-services"), ("POST", "/types"),
                       ("DELETE", "/types/{type_id}"), ("GET", "/capabilities/{host}")]:
        assert "403" in operations[(admin_only[0], prefix + admin_only[1])]["responses"], admin_only
    assert "412" in operations[("PUT", prefix + "/volumes/{volume_id}/metadata")]["responses"]
    assert "409" in operations[("POST", prefix + "/types")]["responses"]  # the name is taken
    # Empty answers are documented without a body; "/" answers 300, as Cinder's does.
    assert "content" not in operations[("DELETE", prefix + "/volumes/{volume_id}")]["responses"]["202"]
    assert "content" not in operations[("POST", prefix + "/volumes/{volume_id}/action")]["responses"]["202"]
    assert set(operations[("GET", "/")]["responses"]) == {"300", "400", "413"}
    queries = {p["name"] for p in operations[("GET", prefix + "/volumes/detail")]["parameters"] if p["in"] == "query"}
    assert {"limit", "offset", "marker", "sort", "all_tenants", "name", "status", "metadata"} <= queries
    for (method, path), op in operations.items():
        headers = {p["name"] for p in op.get("parameters", []) if p["in"] == "header"}
        assert ("OpenStack-API-Version" in headers) == bool(op.get("security")), (method, path)
