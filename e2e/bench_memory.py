"""Peak memory of a data plane streaming every GitHub issue of a sandbox world to an ADBC client, to show
that memory stays bounded however large the result. Prints numbers; asserts nothing.

    e2e/.venv/bin/python e2e/bench_memory.py SCALE [DATA-PLANE FLAGS]   # SCALE 100: 20k issues; 500: 100k
"""
import subprocess, json, time, pathlib, tempfile, threading, sys
import adbc_driver_flightsql.dbapi as f

from conftest import omnisql_binary
scale = sys.argv[1]
extra = sys.argv[2:]  # more data-plane flags, e.g. --cache-mib 0
sb = subprocess.Popen([omnisql_binary(),"sandbox","--github-port","0","--salesforce-port","0","--slack-port","0","--scale",scale], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
text=""
for line in sb.stdout:
    text += line
    if line.startswith("}"): break
apps = json.loads(text)
cfg = pathlib.Path(tempfile.mkdtemp())/"c.toml"
cfg.write_text(f'''[[tenants]]
id = "t"
[[tenants.api_keys]]
principal = "p"
token = "tok-0123456789abcdef"
[[tenants.connections]]
name = "github"
connector = "github"
options = {{ base_url = "{apps['github']['base_url']}", token = "{apps['github']['credentials']['token']}", orgs = "acme" }}
''')
dp = subprocess.Popen([omnisql_binary(),"data-plane","--config",str(cfg),"--flight-addr","127.0.0.1:0", *extra], stderr=subprocess.PIPE, text=True)
for line in dp.stderr:
    if "Flight SQL on" in line:
        uri = line.strip().split("Flight SQL on ")[1]; break
threading.Thread(target=lambda: [None for _ in dp.stderr], daemon=True).start()
def hwm(pid):
    return [l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM")][0]
before = hwm(dp.pid)
c = f.connect(uri, db_kwargs={"adbc.flight.sql.authorization_header": "Bearer tok-0123456789abcdef"})
cur = c.cursor()
t=time.time()
cur.execute("SELECT * FROM github.issues")
rows=0; nbytes=0
for b in cur.fetch_record_batch():
    rows += b.num_rows; nbytes += b.nbytes
print(f"scale {scale}: rows {rows}, arrow {nbytes/1e6:.1f} MB, {time.time()-t:.1f}s; data plane peak RSS before {int(before)/1024:.0f} MB, after {int(hwm(dp.pid))/1024:.0f} MB")
dp.terminate(); sb.terminate()
