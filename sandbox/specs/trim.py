#!/usr/bin/env python3
"""Writes the vendored API descriptions in this folder from the published documents.

Usage: sandbox/specs/trim.py DIR, where DIR holds the published documents under the file names below (the
GitHub REST and Slack Web API OpenAPI documents, the Salesforce describe schema, the Jira Cloud platform,
Stripe and HubSpot CRM companies and contacts OpenAPI documents). Each OpenAPI
document keeps only the operations listed here (what the sandbox serves and the connectors read), with
every schema, parameter and response they reach through `$ref`, so the files stay small and reviewable.
To vendor another operation, add it to the list and run this again.
"""

import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent

GITHUB = "github-rest-openapi-2022-07.json"
GITHUB_PATHS = [
    "/rate_limit",
    "/orgs/{org}/repos",
    "/orgs/{org}/issues",
    "/orgs/{org}/members",
    "/users/{username}/repos",
    "/repos/{owner}/{repo}",
    "/repos/{owner}/{repo}/issues",
    "/repos/{owner}/{repo}/issues/{issue_number}/comments",
    "/repos/{owner}/{repo}/labels",
    "/repos/{owner}/{repo}/pulls",
    "/repos/{owner}/{repo}/commits",
    "/users",
    "/users/{username}",
    "/search/issues",
]
# Referenced by the contract tests directly rather than through an operation.
GITHUB_SCHEMAS = ["basic-error"]

SLACK = "slack-web-openapi-v2.json"
SLACK_PATHS = [
    "/auth.test",
    "/conversations.list",
    "/conversations.info",
    "/conversations.history",
    "/conversations.replies",
    "/conversations.members",
    "/users.list",
    "/users.info",
    "/users.lookupByEmail",
    "/users.conversations",
]

SALESFORCE = "salesforce-sobject-describe.schema.json"

# Only the GET operations of these (the lists the connectors read).
JIRA = "jira-platform-openapi-v3.json"
JIRA_PATHS = ["/rest/api/3/project/search", "/rest/api/3/search", "/rest/api/3/users/search"]
STRIPE = "stripe-openapi-v3.json"
STRIPE_PATHS = ["/v1/customers", "/v1/invoices"]
STRIPE_SCHEMAS = ["error"]
HUBSPOT_COMPANIES = "hubspot-crm-companies-v3.json"
HUBSPOT_CONTACTS = "hubspot-crm-contacts-v3.json"


def refs(node):
    """Every local `$ref` target in a JSON value, as a list of path segments."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/"):
                yield value[2:].split("/")
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def trim(doc, paths, roots, methods=None):
    """`doc` with only `paths` (only `methods` of them, if given), and of its other top-level sections only
    what they reach."""
    missing = [p for p in paths if p not in doc["paths"]]
    if missing:
        sys.exit(f"not in the document: {missing}")
    out = {k: v for k, v in doc.items() if k not in ("paths", "components", "definitions", "parameters", "responses")}
    out["paths"] = {
        p: {m: op for m, op in doc["paths"][p].items() if methods is None or m in methods or m == "parameters"}
        for p in paths
    }
    pending = list(refs(out["paths"])) + [r.split("/") for r in roots]
    seen = set()
    while pending:
        ref = pending.pop()
        key = "/".join(ref)
        if key in seen:
            continue
        seen.add(key)
        node = doc
        for part in ref:
            node = node[part.replace("~1", "/").replace("~0", "~")]
        parent = out
        for part in ref[:-1]:
            parent = parent.setdefault(part, {})
        parent[ref[-1]] = node
        pending.extend(refs(node))
    return out


def main():
    src = pathlib.Path(sys.argv[1]) if len(sys.argv) == 2 else sys.exit(__doc__)
    github = json.loads((src / GITHUB).read_text())
    slack = json.loads((src / SLACK).read_text())
    read = lambda name: json.loads((src / name).read_text())
    outputs = {
        GITHUB: trim(github, GITHUB_PATHS, [f"components/schemas/{s}" for s in GITHUB_SCHEMAS]),
        SLACK: trim(slack, SLACK_PATHS, []),
        JIRA: trim(read(JIRA), JIRA_PATHS, ["components/schemas/ErrorCollection"], ("get",)),
        STRIPE: trim(read(STRIPE), STRIPE_PATHS, [f"components/schemas/{s}" for s in STRIPE_SCHEMAS], ("get",)),
        HUBSPOT_COMPANIES: trim(read(HUBSPOT_COMPANIES), ["/crm/v3/objects/companies"], [], ("get",)),
        HUBSPOT_CONTACTS: trim(read(HUBSPOT_CONTACTS), ["/crm/v3/objects/contacts"], [], ("get",)),
    }
    for name, doc in outputs.items():
        (HERE / name).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"{name}: {len(doc['paths'])} of the published paths, {(HERE / name).stat().st_size} bytes")
    # The describe schema is small and vendored as published.
    (HERE / SALESFORCE).write_bytes((src / SALESFORCE).read_bytes())


if __name__ == "__main__":
    main()
