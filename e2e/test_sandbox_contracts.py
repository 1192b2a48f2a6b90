"""Sandbox responses validate against the published API descriptions vendored in sandbox/specs."""

import json
import pathlib
import urllib.error
import urllib.parse
import urllib.request

import graphql
import jsonschema
import pytest
from openapi_schema_validator import OAS30Validator

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPECS = ROOT / "sandbox" / "specs"


@pytest.fixture(scope="module")
def github_spec():
    return json.loads((SPECS / "github-rest-openapi-2022-07.json").read_text())


@pytest.fixture(scope="module")
def slack_spec():
    return json.loads((SPECS / "slack-web-openapi-v2.json").read_text())


def fetch(url, headers=None, data=None):
    req = urllib.request.Request(url, data=data, headers={"user-agent": "contract-test", **(headers or {})})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read()), resp.headers


def github_validator(spec, response_schema):
    return OAS30Validator({**response_schema, "components": spec["components"]})


def response_schema(spec, path, code="200"):
    return spec["paths"][path]["get"]["responses"][code]["content"]["application/json"]["schema"]


@pytest.mark.parametrize(
    "spec_path,url_path",
    [
        ("/orgs/{org}/repos", "/orgs/acme/repos?per_page=100"),
        ("/orgs/{org}/issues", "/orgs/acme/issues?filter=all&state=all&per_page=100"),
        ("/repos/{owner}/{repo}/issues", "/repos/acme/api/issues?state=all&per_page=100"),
        ("/repos/{owner}/{repo}/pulls", "/repos/acme/api/pulls?state=all&per_page=20"),
        ("/repos/{owner}/{repo}/commits", "/repos/acme/api/commits?per_page=20"),
        ("/users", "/users?per_page=100"),
        ("/search/issues", "/search/issues?q=repo:acme/api+is:issue+state:open"),
    ],
)
def test_github_lists_match_the_openapi_description(dev, github_spec, spec_path, url_path):
    gh = dev.app("github")
    body, _ = fetch(gh["base_url"] + url_path, {"authorization": f"Bearer {gh['credentials']['token']}"})
    assert body, "the sandbox returned nothing to validate"
    github_validator(github_spec, response_schema(github_spec, spec_path)).validate(body)


def test_github_user_matches_the_public_user_schema(dev, github_spec):
    gh = dev.app("github")
    h = {"authorization": f"Bearer {gh['credentials']['token']}"}
    users, _ = fetch(gh["base_url"] + "/users?per_page=5", h)
    user, _ = fetch(gh["base_url"] + "/users/" + users[0]["login"], h)
    github_validator(github_spec, response_schema(github_spec, "/users/{username}")).validate(user)


@pytest.fixture(scope="module")
def github_graphql_schema():
    # GitHub's published SDL breaks two rules of the GraphQL spec (two fields of EnterpriseOwnerInfo are
    # defined twice; some deprecated fields implement interface fields that are not): it is read as
    # published, and queries are still validated against it.
    sdl = (SPECS / "github-graphql-schema.graphql").read_text()
    return graphql.build_schema(sdl, assume_valid=True, assume_valid_sdl=True)


def owners_query(count):
    """The query the GitHub connector sends for `count` logins (data-plane/connectors/github/src/graphql.rs)."""
    head = ", ".join(f"$l{i}: String!" for i in range(count))
    body = " ".join(
        f"u{i}: repositoryOwner(login: $l{i}) {{ __typename login "
        "... on User { databaseId name email company createdAt isSiteAdmin } "
        "... on Organization { databaseId name orgEmail: email createdAt } }"
        for i in range(count)
    )
    return f"query({head}) {{ {body} }}"


def by_response_key(source, info, **_):
    return source.get(info.path.key) if isinstance(source, dict) else None


def conforms(schema, query, variables, data):
    """Executes `query` over the sandbox's `data` with graphql-core: its result coercion checks that every
    value has its field's type and that no non-null field is null."""
    result = graphql.execute_sync(schema, graphql.parse(query), root_value=data, variable_values=variables,
                                  field_resolver=by_response_key)
    assert result.errors is None, result.errors
    assert result.data == data


def test_github_graphql_answers_conform_to_the_published_schema(dev, github_graphql_schema):
    gh = dev.app("github")
    h = {"authorization": f"Bearer {gh['credentials']['token']}", "content-type": "application/json"}
    users, _ = fetch(gh["base_url"] + "/users?per_page=3", h)
    logins = [u["login"] for u in users] + ["nobody-here"]
    query, variables = owners_query(len(logins)), {f"l{i}": l for i, l in enumerate(logins)}
    assert graphql.validate(github_graphql_schema, graphql.parse(query)) == [], "graphql-core accepts the query too"
    body, headers = fetch(gh["base_url"] + "/graphql", h, json.dumps({"query": query, "variables": variables}).encode())
    assert headers["x-ratelimit-resource"] == "graphql"
    assert "errors" not in body, "an unknown owner is null without an error"
    assert [body["data"][f"u{i}"] and body["data"][f"u{i}"]["login"] for i in range(len(logins))] == logins[:3] + [None]
    assert body["data"]["u0"]["__typename"] == "User"
    conforms(github_graphql_schema, query, variables, body["data"])

    query = '{ rateLimit { cost limit remaining used resetAt nodeCount } u: user(login: "nobody-here") { login } }'
    body, _ = fetch(gh["base_url"] + "/graphql", h, json.dumps({"query": query}).encode())
    assert body["data"]["u"] is None
    [error] = body["errors"]
    assert error["type"] == "NOT_FOUND" and error["path"] == ["u"] and error["locations"][0]["line"] == 1
    conforms(github_graphql_schema, query, {}, body["data"])


def test_github_errors_match_basic_error(dev, github_spec):
    gh = dev.app("github")
    with pytest.raises(urllib.error.HTTPError) as err:
        fetch(gh["base_url"] + "/repos/acme/api/issues", {"authorization": "Bearer wrong"})
    assert err.value.code == 401
    body = json.loads(err.value.read())
    assert body["message"] == "Bad credentials"
    OAS30Validator({"$ref": "#/components/schemas/basic-error", "components": github_spec["components"]}).validate(body)


def slack_validator(spec, method):
    schema = spec["paths"][method]["get"]["responses"]["200"]["schema"]
    return jsonschema.Draft4Validator({**schema, "definitions": spec["definitions"]})


@pytest.mark.parametrize("method,query", [("/conversations.list", "limit=1000"), ("/users.list", "limit=1000")])
def test_slack_methods_match_the_openapi_description(dev, slack_spec, method, query):
    sl = dev.app("slack")
    body, _ = fetch(f"{sl['base_url']}/api{method}?{query}", {"authorization": f"Bearer {sl['credentials']['token']}"})
    slack_validator(slack_spec, method).validate(body)


def test_slack_history_matches_the_description_except_response_metadata(dev, slack_spec):
    # The published schema omits `response_metadata`, which real responses carry.
    sl = dev.app("slack")
    h = {"authorization": f"Bearer {sl['credentials']['token']}"}
    channels, _ = fetch(f"{sl['base_url']}/api/conversations.list", h)
    body, _ = fetch(f"{sl['base_url']}/api/conversations.history?channel={channels['channels'][1]['id']}&limit=10", h)
    assert body["response_metadata"]["next_cursor"]
    body.pop("response_metadata")
    slack_validator(slack_spec, "/conversations.history").validate(body)


def test_salesforce_describe_matches_the_describe_schema(dev):
    schema = json.loads((SPECS / "salesforce-sobject-describe.schema.json").read_text())
    sf = dev.app("salesforce")
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": sf["credentials"]["client_id"],
                                   "client_secret": sf["credentials"]["client_secret"]}).encode()
    token, _ = fetch(sf["base_url"] + "/services/oauth2/token", data=form)
    h = {"authorization": f"Bearer {token['access_token']}"}
    objects, _ = fetch(token["instance_url"] + "/services/data/v62.0/sobjects", h)
    names = [o["name"] for o in objects["sobjects"]]
    assert "Renewal__c" in names
    for name in names:
        describe, _ = fetch(f"{token['instance_url']}/services/data/v62.0/sobjects/{name}/describe", h)
        describe.pop("urls", None)  # not part of the published schema
        jsonschema.Draft7Validator(schema).validate(describe)


def load_spec(name):
    return nullable_alternatives(json.loads((SPECS / name).read_text()))


def nullable_alternatives(node):
    """Reads OpenAPI 3.0's `nullable: true` beside `anyOf` or `enum` as the document means it (null
    allowed), which the validator applies only beside `type` (Stripe's document writes every optional
    object and status so, and its API answers null there)."""
    if isinstance(node, dict):
        node = {k: nullable_alternatives(v) for k, v in node.items()}
        if node.get("nullable") is True and "anyOf" in node:
            node["anyOf"] = node["anyOf"] + [{"enum": [None]}]
        if node.get("nullable") is True and isinstance(node.get("enum"), list) and None not in node["enum"]:
            node["enum"] = node["enum"] + [None]
        return node
    if isinstance(node, list):
        return [nullable_alternatives(v) for v in node]
    return node


def oas_validator(spec, schema):
    return OAS30Validator({**schema, "components": spec["components"]})


def fetch_error(url, headers):
    """The status, body and headers of a request that must fail."""
    try:
        fetch(url, headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers
    raise AssertionError(f"{url} did not fail")


@pytest.mark.parametrize("path,query", [
    ("/rest/api/3/project/search", "maxResults=2"),
    ("/rest/api/3/search", 'jql=project = "API" AND status IN ("To Do", "In Progress")&maxResults=5&fields=summary,status,assignee,customfield_10042'),
    ("/rest/api/3/users/search", "maxResults=5"),
])
def test_jira_lists_match_the_openapi_description(dev, path, query):
    spec = load_spec("jira-platform-openapi-v3.json")
    jira = dev.app("jira")
    h = {"authorization": f"Bearer {jira['credentials']['token']}"}
    body, headers = fetch(f"{jira['base_url']}{path}?{urllib.parse.quote(query, safe='=&,')}", h)
    assert body, "the sandbox returned nothing to validate"
    oas_validator(spec, response_schema(spec, path)).validate(body)
    assert int(headers["x-ratelimit-remaining"]) >= 0


def test_jira_refusals_are_error_collections(dev):
    spec = load_spec("jira-platform-openapi-v3.json")
    jira = dev.app("jira")
    status, body, _ = fetch_error(f"{jira['base_url']}/rest/api/3/project/search", {"authorization": "Bearer wrong"})
    assert status == 401
    oas_validator(spec, {"$ref": "#/components/schemas/ErrorCollection"}).validate(body)
    h = {"authorization": f"Bearer {jira['credentials']['token']}"}
    status, body, _ = fetch_error(f"{jira['base_url']}/rest/api/3/search?jql=colour%20%3D%20red", h)
    assert status == 400 and "Field 'colour' does not exist" in body["errorMessages"][0]


@pytest.mark.parametrize("path,query", [("/v1/customers", "limit=3"), ("/v1/invoices", "limit=5&status=open")])
def test_stripe_lists_match_the_openapi_description(dev, path, query):
    spec = load_spec("stripe-openapi-v3.json")
    stripe = dev.app("stripe")
    h = {"authorization": f"Bearer {stripe['credentials']['token']}"}
    body, _ = fetch(f"{stripe['base_url']}{path}?{query}", h)
    assert body["data"] and body["has_more"] is True
    oas_validator(spec, response_schema(spec, path)).validate(body)
    after, _ = fetch(f"{stripe['base_url']}{path}?{query}&starting_after={body['data'][-1]['id']}", h)
    assert not {r["id"] for r in after["data"]} & {r["id"] for r in body["data"]}, "the next page starts after the last row"


def test_stripe_refusals_are_error_objects(dev):
    spec = load_spec("stripe-openapi-v3.json")
    stripe = dev.app("stripe")
    status, body, _ = fetch_error(f"{stripe['base_url']}/v1/customers", {"authorization": "Bearer sk_test_wrong"})
    assert status == 401 and body["error"]["message"].startswith("Invalid API Key provided")
    oas_validator(spec, {"$ref": "#/components/schemas/error"}).validate(body)
    h = {"authorization": f"Bearer {stripe['credentials']['token']}"}
    status, body, _ = fetch_error(f"{stripe['base_url']}/v1/customers?limit=101", h)
    assert status == 400 and body["error"]["param"] == "limit"


@pytest.mark.parametrize("spec_file,path,query", [
    ("hubspot-crm-companies-v3.json", "/crm/v3/objects/companies", "limit=3&properties=name,domain,numberofemployees"),
    ("hubspot-crm-contacts-v3.json", "/crm/v3/objects/contacts", "limit=3&properties=email,company&associations=companies"),
])
def test_hubspot_lists_match_the_openapi_description(dev, spec_file, path, query):
    spec = load_spec(spec_file)
    hs = dev.app("hubspot")
    h = {"authorization": f"Bearer {hs['credentials']['token']}"}
    body, headers = fetch(f"{hs['base_url']}{path}?{query}", h)
    assert len(body["results"]) == 3 and body["paging"]["next"]["after"]
    oas_validator(spec, response_schema(spec, path)).validate(body)
    assert all(isinstance(v, (str, type(None))) for r in body["results"] for v in r["properties"].values())
    assert int(headers["x-hubspot-ratelimit-max"]) > 0 and int(headers["x-hubspot-ratelimit-remaining"]) >= 0


def test_hubspot_refusals_are_error_objects(dev):
    spec = load_spec("hubspot-crm-companies-v3.json")
    hs = dev.app("hubspot")
    status, body, _ = fetch_error(f"{hs['base_url']}/crm/v3/objects/companies", {"authorization": "Bearer pat-wrong"})
    assert status == 401 and body["category"] == "INVALID_AUTHENTICATION"
    oas_validator(spec, {"$ref": "#/components/schemas/Error"}).validate(body)
