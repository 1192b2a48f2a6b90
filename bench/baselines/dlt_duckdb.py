"""The outside baseline: answer the benchmark's join the way people do without OmniSQL — copy the three
apps into DuckDB with dlt's REST API source (link-header, cursor and next-URL pagination), then run SQL.

Prints one JSON object: seconds to load, to answer the question once loaded (first and repeated), and
the rows. `omnisql bench` runs it when given a Python with dlt installed.

    python dlt_duckdb.py --endpoints endpoints.json
"""

import argparse
import json
import pathlib
import tempfile
import time
import urllib.parse
import urllib.request

import dlt
import duckdb
from dlt.sources.rest_api import rest_api_source

QUERY = """
SELECT i.number, c.email AS customer, m.profile__real_name AS owner
FROM github.issues i
JOIN github.user_details gu ON gu.login = i.user__login
JOIN salesforce.contacts c ON c.email = gu.email
JOIN salesforce.accounts a ON a.id = c.account_id
JOIN salesforce.sf_users u ON u.id = a.owner_id
JOIN slack.members m ON m.profile__email = u.email
WHERE i.state = 'open' AND i.pull_request__url IS NULL
"""


def github_source(app):
    return rest_api_source({
        "client": {
            "base_url": app["base_url"] + "/",
            "auth": {"type": "bearer", "token": app["credentials"]["token"]},
            "paginator": {"type": "header_link"},
        },
        "resource_defaults": {"write_disposition": "replace"},
        "resources": [
            {"name": "repos", "endpoint": {"path": "orgs/acme/repos", "params": {"per_page": 100}}},
            {
                "name": "issues",
                "endpoint": {
                    "path": "repos/acme/{repo}/issues",
                    "params": {"state": "all", "per_page": 100, "repo": {"type": "resolve", "resource": "repos", "field": "name"}},
                },
            },
            {"name": "users", "endpoint": {"path": "users", "params": {"per_page": 100}}},
            {
                "name": "user_details",
                "endpoint": {
                    "path": "users/{login}",
                    "params": {"login": {"type": "resolve", "resource": "users", "field": "login"}},
                    "paginator": "single_page",
                },
            },
        ],
    })


def salesforce_source(app):
    form = urllib.parse.urlencode({
        "grant_type": "client_credentials",
        "client_id": app["credentials"]["client_id"],
        "client_secret": app["credentials"]["client_secret"],
    }).encode()
    with urllib.request.urlopen(app["base_url"] + "/services/oauth2/token", data=form) as resp:
        token = json.loads(resp.read())

    def soql(name, query):
        return {
            "name": name,
            "endpoint": {
                "path": "services/data/v62.0/query",
                "params": {"q": query},
                "data_selector": "records",
                "paginator": {"type": "json_link", "next_url_path": "nextRecordsUrl"},
            },
        }

    return rest_api_source({
        "client": {"base_url": token["instance_url"] + "/", "auth": {"type": "bearer", "token": token["access_token"]}},
        "resource_defaults": {"write_disposition": "replace"},
        "resources": [
            soql("contacts", "SELECT Id, Email, AccountId FROM Contact"),
            soql("accounts", "SELECT Id, Name, OwnerId FROM Account"),
            soql("sf_users", "SELECT Id, Email FROM User"),
        ],
    })


def slack_source(app):
    return rest_api_source({
        "client": {"base_url": app["base_url"] + "/api/", "auth": {"type": "bearer", "token": app["credentials"]["token"]}},
        "resource_defaults": {"write_disposition": "replace"},
        "resources": [
            {
                "name": "members",
                "endpoint": {
                    "path": "users.list",
                    "params": {"limit": 1000},
                    "data_selector": "members",
                    "paginator": {"type": "cursor", "cursor_path": "response_metadata.next_cursor", "cursor_param": "cursor"},
                },
            }
        ],
    })


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoints", required=True)
    args = ap.parse_args()
    apps = json.loads(pathlib.Path(args.endpoints).read_text())
    workdir = pathlib.Path(tempfile.mkdtemp())
    db = str(workdir / "saas.duckdb")
    started = time.perf_counter()
    for name, source in [("github", github_source(apps["github"])), ("salesforce", salesforce_source(apps["salesforce"])),
                         ("slack", slack_source(apps["slack"]))]:
        pipeline = dlt.pipeline(pipeline_name=f"bench_{name}", destination=dlt.destinations.duckdb(db), dataset_name=name,
                                pipelines_dir=str(workdir / "pipelines"))
        pipeline.run(source)
    load_s = time.perf_counter() - started
    con = duckdb.connect(db, read_only=True)
    timings = []
    for _ in range(5):
        t = time.perf_counter()
        rows = con.execute(QUERY).fetchall()
        timings.append(time.perf_counter() - t)
    # A fresh question pays the load and one query; a repeated one only the query (on stale data).
    print(json.dumps({"load_seconds": load_s, "first_query_seconds": timings[0],
                      "repeat_query_seconds": sorted(timings)[len(timings) // 2], "rows": len(rows)}))


if __name__ == "__main__":
    main()
