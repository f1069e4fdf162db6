"""CPython guest for encrypted pre-opens: JSON (and SQLite, when the build has sqlite3)
written to the directory argv[1], read back, and the outcome printed as one JSON line."""

import json
import os
import sys

root = sys.argv[1]
report = {"files": None, "json": None, "sqlite": "unavailable"}
doc = {"patients": [{"name": f"SECRETNAME{i}", "score": i * 1.5} for i in range(200)]}
os.makedirs(os.path.join(root, "records"), exist_ok=True)
path = os.path.join(root, "records", "SECRETFILE.json")
with open(path, "w") as f:
    json.dump(doc, f)
with open(path) as f:
    report["json"] = json.load(f) == doc
os.replace(path, path + ".bak")
report["files"] = sorted(os.listdir(os.path.join(root, "records")))
try:
    import sqlite3
except ImportError:
    pass
else:
    db = sqlite3.connect(os.path.join(root, "SECRETDB.sqlite"))
    db.execute("create table t (k text, v integer)")
    db.executemany("insert into t values (?, ?)", [(f"SECRETROW{i}", i) for i in range(500)])
    db.commit()
    db.close()
    db = sqlite3.connect(os.path.join(root, "SECRETDB.sqlite"))
    report["sqlite"] = db.execute("select count(*), sum(v) from t").fetchone() == (500, 124750)
    db.close()
print(json.dumps(report, sort_keys=True))
